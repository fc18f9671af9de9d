package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// benchChunk is the chunk size of the streaming benchmarks.
const benchChunk = 16 << 10

// benchChunks is the chunks of one streamed response: 4 MiB.
const benchChunks = 256

// BenchmarkMeteredStream compares, in one run, a streamed response of 256
// chunks of 16 KiB over a loopback connection, written straight to the
// server's writer and through the meter's writer (per MiB: a unit begun
// every 64 chunks). The two are interleaved, each op streaming one of
// each (in turns first), so that both see the same machine; it reports
// the process's CPU time per chunk of each (server and client: steadier
// than wall time on a shared machine) and the meter's overhead in percent
// (the goal: at most 3).
func BenchmarkMeteredStream(b *testing.B) {
	g := &Gate{Vendor: "news.example", Price: 1, Meter: &MeterConfig{By: coupons.MeterBytes, Per: 1 << 20, Window: 8, Hold: 1}}
	chunk := make([]byte, benchChunk)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metered" {
			s := &session{g: g, units: benchChunks, wake: make(chan struct{}, 1)}
			w = &meterWriter{ResponseWriter: w, s: s, m: *g.meter(), ctx: r.Context(), hold: time.Second, started: time.Now()}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		rc := http.NewResponseController(w)
		for range benchChunks {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			rc.Flush() // as reverse_proxy streaming a body of unknown length
		}
	}))
	defer srv.Close()
	client := srv.Client()
	buf := make([]byte, 64<<10)
	stream := func(path string) time.Duration {
		start := cpuTime()
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		if err != nil || n != benchChunk*benchChunks {
			b.Fatalf("%s: %d bytes, %v", path, n, err)
		}
		return cpuTime() - start
	}
	var plain, metered time.Duration
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 { // each goes first half of the time
			plain += stream("/plain")
			metered += stream("/metered")
		} else {
			metered += stream("/metered")
			plain += stream("/plain")
		}
	}
	n := float64(b.N) * benchChunks
	b.ReportMetric(float64(plain.Nanoseconds())/n, "plain-cpu-ns/chunk")
	b.ReportMetric(float64(metered.Nanoseconds())/n, "metered-cpu-ns/chunk")
	b.ReportMetric(100*(float64(metered)-float64(plain))/float64(plain), "overhead-%")
}

// BenchmarkMeterWriterChunk is the meter's own work per 16 KiB chunk (a
// bytes meter per MiB, a unit begun every 64 chunks), against a writer
// that discards: what BenchmarkMeteredStream's overhead is made of.
func BenchmarkMeterWriterChunk(b *testing.B) {
	g := &Gate{Vendor: "news.example", Price: 1, Meter: &MeterConfig{By: coupons.MeterBytes, Per: 1 << 20, Window: 8}}
	s := &session{g: g, units: 1 << 31, wake: make(chan struct{}, 1)}
	mw := &meterWriter{ResponseWriter: discardWriter{http.Header{}}, s: s, m: *g.meter(), hold: time.Second, started: time.Now()}
	chunk := make([]byte, benchChunk)
	b.ReportAllocs()
	b.SetBytes(benchChunk)
	for b.Loop() {
		if _, err := mw.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMeterWriterEvent is the meter's work per server-sent event of
// 100 bytes, metered per 10 events.
func BenchmarkMeterWriterEvent(b *testing.B) {
	g := &Gate{Vendor: "news.example", Price: 1, Meter: &MeterConfig{By: coupons.MeterEvents, Per: 10, Window: 8}}
	s := &session{g: g, units: 1 << 31, wake: make(chan struct{}, 1)}
	h := http.Header{"Content-Type": {"text/event-stream"}}
	mw := &meterWriter{ResponseWriter: discardWriter{h}, s: s, m: *g.meter(), hold: time.Second, started: time.Now()}
	ev := []byte("data: {\"token\":\"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\"}\n\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mw.Write(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// BenchmarkTopup is the gate's cost of a top-up: a POST to the top-up
// endpoint paying a window of 8 coupons on the lane of a metered response
// in flight (memory store), verified, held and added to the response's
// window.
func BenchmarkTopup(b *testing.B) {
	w := bigWorld(b)
	g := newGateWith(b, w, `{"backend":"memory"}`, 1, func(g *Gate) {
		g.Meter = &MeterConfig{By: coupons.MeterEvents, Per: 1, Window: 8}
	})
	c := newClient(b, nil, w.owner, 0)
	rec := serve(g, "GET", "/stream", nil)
	c.nonce = nonceRe.FindStringSubmatch(rec.Header().Get("WWW-Authenticate"))[1]
	if rec := serve(g, "GET", "/stream", c.payment("GET", "/stream", 8)); rec.Code != 200 {
		b.Fatalf("opening the lane: %d %s", rec.Code, rec.Body)
	}
	s := &session{g: g, lane: c.lane, wake: make(chan struct{}, 1)}
	sessions.add(s)
	defer sessions.remove(s)
	b.ReportAllocs()
	for b.Loop() {
		if rec := serve(g, "POST", coupons.TopupPath, c.payment("POST", coupons.TopupPath, 8)); rec.Code != 200 {
			b.Fatalf("top-up: %d %s", rec.Code, rec.Body)
		}
		<-s.wake
	}
	if s.units < 8 {
		b.Fatalf("the top-ups added %d units", s.units)
	}
}
