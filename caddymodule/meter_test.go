package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/ecoupons/ecoupons/coupons"
)

// sseUpstream serves /stream/<n>: n server-sent events "data: event k",
// flushed one by one, each after a keep-alive comment; /stream/die/<n>
// sends n events and breaks the connection.
func sseUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/stream/")
		die := strings.HasPrefix(path, "die/")
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "die/"))
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		for k := 1; k <= n; k++ {
			if _, err := fmt.Fprintf(w, ": keep-alive\n\ndata: event %d\n\n", k); err != nil {
				return
			}
			rc.Flush()
		}
		if die {
			panic(http.ErrAbortHandler) // the connection breaks mid-stream
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func meterCaddyfile(w *world, upstream, meter string) string {
	return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
}
localhost:9080 {
	ecoupon /stream/* {
		vendor news.example
		broker_key %s
		price 1
		unit 0.001 EUR
		store memory
		max_jump 64
		lane_rate -1
		%s
	}
	reverse_proxy /stream/* %s
}
`, w.brokerKeyFile, meter, strings.TrimPrefix(upstream, "http://"))
}

// sseEvent is one event read from a stream: its type ("" for message)
// and data.
type sseEvent struct{ typ, data string }

// readEvent reads the next event (skipping comment-only blocks); io.EOF at
// the end of the stream.
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	fields := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if fields {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.typ, fields = strings.TrimPrefix(line, "event: "), true
		case strings.HasPrefix(line, "data: "):
			ev.data, fields = strings.TrimPrefix(line, "data: "), true
		default:
			fields = true
		}
	}
}

// streamClient is a client streaming from the test Caddy (its own
// http.Client: caddytest's times out whole requests after 5 s).
var streamClient = &http.Client{Transport: &http.Transport{}}

func streamGet(t *testing.T, path string, h http.Header) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://localhost:9080"+path, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// topup pays n coupons on c's lane at the top-up endpoint.
func (c *client) topup(t *testing.T, n int) (*http.Response, string) {
	t.Helper()
	return do(t, c.tc, "POST", coupons.TopupPath, c.payment("POST", coupons.TopupPath, n))
}

// TestMeteredSSEHoldsAndResumesOnTopup: an SSE upstream behind
// reverse_proxy, metered per event at one coupon, a window of 3: the
// client gets exactly the 3 events it paid for, then a need-topup event
// naming its lane and what to pay, and the stream waits; a top-up of 3
// coupons on the same lane resumes it for 3 more events; a client that
// never tops up again gets nothing more, and the stream ends cleanly at
// the hold timeout, its trailers saying 6 units were charged.
func TestMeteredSSEHoldsAndResumesOnTopup(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	up := sseUpstream(t)
	tc := caddytest.NewTester(t)
	tc.InitServer(meterCaddyfile(w, up.URL, "meter events 1\n\t\tmeter_window 3\n\t\tmeter_hold 1s"), "caddyfile")
	c := newClient(t, tc, w.owner, 0)
	resp, body := c.get("/stream/20", nil)
	if resp.StatusCode != 402 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `meter="events 1", window=3`) {
		t.Fatalf("402 of a metered route: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	c.nonce = c.challenge("/stream/20")

	sresp := streamGet(t, "/stream/20", c.payment("GET", "/stream/20", 3))
	defer sresp.Body.Close()
	if sresp.StatusCode != 200 || sresp.Header.Get(coupons.HeaderMeter) != "events 1" || sresp.Header.Get(coupons.HeaderWindow) != "3" {
		t.Fatalf("metered response: %d %v", sresp.StatusCode, sresp.Header)
	}
	br := bufio.NewReader(sresp.Body)
	expect := func(from, to int) {
		t.Helper()
		for k := from; k <= to; k++ {
			ev, err := readEvent(br)
			if err != nil || ev.data != fmt.Sprintf("event %d", k) {
				t.Fatalf("event %d: %+v %v", k, ev, err)
			}
		}
		ev, err := readEvent(br)
		if err != nil || ev.typ != coupons.NeedTopupEvent {
			t.Fatalf("after event %d: %+v %v, want need-topup", to, ev, err)
		}
		n, err := coupons.ParseNeedTopup([]byte(ev.data))
		if err != nil || n.Lane != c.lane.String() || n.Coupons != 3 || n.Units != 3 || n.Charged != uint32(to) {
			t.Fatalf("need-topup %+v %v", n, err)
		}
	}
	expect(1, 3)
	tresp, tbody := c.topup(t, 3)
	if tresp.StatusCode != 200 {
		t.Fatalf("top-up: %d %s", tresp.StatusCode, tbody)
	}
	var tr struct{ Units, Coupons uint32 }
	if json.Unmarshal([]byte(tbody), &tr); tr.Units != 3 || tr.Coupons != 3 {
		t.Fatalf("top-up answer: %s", tbody)
	}
	expect(4, 6)
	// No more top-ups: nothing more, and a clean end at the hold timeout.
	start := time.Now()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the held stream did not end cleanly: %v", err)
	}
	if strings.Contains(string(rest), "data: event") {
		t.Fatalf("events beyond what was paid: %q", rest)
	}
	if d := time.Since(start); d < 800*time.Millisecond || d > 5*time.Second {
		t.Errorf("the held stream ended after %v, meter_hold 1s", d)
	}
	if got := sresp.Trailer.Get(coupons.HeaderCharged); got != "6" {
		t.Errorf("trailer %s %q, want 6", coupons.HeaderCharged, got)
	}
	if got := sresp.Trailer.Get(coupons.HeaderEnd); got != coupons.EndHoldTimeout {
		t.Errorf("trailer %s %q", coupons.HeaderEnd, got)
	}
	// A top-up with no stream in flight is refused before any coupon.
	pos := c.cursor.Position()
	if tresp, tbody := c.topup(t, 3); tresp.StatusCode != 409 || errorCode(t, tbody) != coupons.CodeNoSession {
		t.Fatalf("top-up without a stream: %d %s", tresp.StatusCode, tbody)
	}
	// The refused coupons were not accepted: the lane takes them again.
	c.cursor, _, _ = coupons.NewCursor(w.owner.Book.Book.LaneTag(0), 64, mustSeed(t, w.owner, 0))
	for c.cursor.Position() < pos {
		c.cursor.Next()
	}
	sresp2 := streamGet(t, "/stream/2", c.payment("GET", "/stream/2", 3))
	io.ReadAll(sresp2.Body)
	sresp2.Body.Close()
	if sresp2.StatusCode != 200 {
		t.Fatalf("after a refused top-up, its coupons pay: %d", sresp2.StatusCode)
	}
	// 2 events of a window of 3: one unit comes back as credit.
	if got := sresp2.Trailer.Get(coupons.HeaderCharged); got != "2" {
		t.Errorf("2 events charged %q units", got)
	}
	if got := sresp2.Trailer.Get(HeaderCredit); got != "1" {
		t.Errorf("credit after 2 events of a window of 3: %q, want 1", got)
	}
}
