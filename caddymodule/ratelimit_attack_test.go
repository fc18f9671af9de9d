package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// serveFrom is serve for a request from addr (host:port).
func serveFrom(g *Gate, addr, method, path string, h http.Header, body string) *httptest.ResponseRecorder {
	return serveRequest(g, okHandler, method, path, h, []byte(body), func(r *http.Request) { r.RemoteAddr = addr })
}

// openLimitedGate is a test gate with opens_per_minute n, at a frozen clock.
func openLimitedGate(t *testing.T, w *world, n int) *Gate {
	g := newGate(t, w, `{"backend":"memory"}`, 1)
	g.OpensPerMinute = n
	g.opens = newIPWindow(n, time.Minute, g.IPv6Prefix)
	now := time.Now()
	g.now = func() time.Time { return now }
	return g
}

// honestOpen opens lane of w's owner from addr with its first payment and
// reports the answer's status.
func honestOpen(t *testing.T, g *Gate, w *world, lane uint32, addr string) *httptest.ResponseRecorder {
	c := newClient(t, nil, w.owner, lane)
	c.nonce = gateNonce(g)
	return serveFrom(g, addr, "GET", "/premium/x", c.payment("GET", "/premium/x", 1), "")
}

// TestOpenLimiterFloodFromOnePrefix: 100,000 distinct addresses of one
// IPv6 /64 are one client to the open limiter: 30 of their opens pass a
// minute, the rest get 429; the table holds one entry for them; and a
// client from another prefix still opens. (Before, each address was
// counted alone: the flood got 30 opens per address, and once 65,536
// addresses were counted every new client was refused.)
func TestOpenLimiterFloodFromOnePrefix(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	g := openLimitedGate(t, w, 30)
	passed := 0
	for k := 0; k < 100_000; k++ {
		addr := fmt.Sprintf("[2001:db8:1:2:%x:%x:%x:%x]:4000", k>>16, k&0xffff, k*7&0xffff, k*13&0xffff)
		rec := serveFrom(g, addr, "POST", OpenPath, nil, "(not an open)")
		switch rec.Code {
		case 429:
			if errorCode(t, rec.Body.String()) != "open_rate_limited" || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("flood open %d: 429 %q %s", k, rec.Header().Get("Retry-After"), rec.Body)
			}
		default:
			passed++
		}
	}
	if passed != 30 {
		t.Fatalf("%d opens of the flood from one /64 passed the limiter, want 30", passed)
	}
	if len(g.opens.heap) != 1 || len(g.opens.pos) != 1 {
		t.Fatalf("the limiter holds %d/%d entries for one /64", len(g.opens.heap), len(g.opens.pos))
	}
	if rec := honestOpen(t, g, w, 0, "[2001:db8:1:3::1]:5000"); rec.Code != 200 {
		t.Fatalf("a client of another /64 could not open: %d %s", rec.Code, rec.Body)
	}
	// IPv4 addresses are counted one by one.
	if rec := honestOpen(t, g, w, 1, "198.51.100.7:5000"); rec.Code != 200 {
		t.Fatalf("an IPv4 client could not open: %d %s", rec.Code, rec.Body)
	}
}

// TestOpenLimiterFloodOfPrefixesDoesNotLockOutNewcomers: more distinct
// prefixes than the table holds (ipTableSize + 10,000 /64s, each opening
// up to past the limit) do not lock a new client out: its opens pass,
// while the table stays at ipTableSize entries. And a prefix that went
// past the limit stays refused through a flood of fewer prefixes than
// the table holds.
func TestOpenLimiterFloodOfPrefixesDoesNotLockOutNewcomers(t *testing.T) {
	w := newWorld(t, "news.example", t0Later())
	const limit = 2
	g := openLimitedGate(t, w, limit)
	heavy := "[2001:db8:ffff:ffff::1]:4000"
	for k := 0; k <= limit; k++ {
		serveFrom(g, heavy, "POST", OpenPath, nil, "(not an open)")
	}
	if rec := serveFrom(g, heavy, "POST", OpenPath, nil, "(not an open)"); rec.Code != 429 {
		t.Fatalf("a prefix past the limit: %d %s", rec.Code, rec.Body)
	}
	// The flood: each prefix opens limit+1 times (its last refused).
	flood := ipTableSize + 10_000
	most := 0 // the most entries the table held
	for k := 0; k < flood; k++ {
		addr := fmt.Sprintf("[2001:db8:%x:%x::1]:4000", k>>16, k&0xffff)
		for j := 0; j <= limit; j++ {
			serveFrom(g, addr, "POST", OpenPath, nil, "(not an open)")
		}
		if k == ipTableSize/2 {
			// Half the table's worth of prefixes: the heavy one still counts.
			if rec := serveFrom(g, heavy, "POST", OpenPath, nil, "(not an open)"); rec.Code != 429 {
				t.Fatalf("a prefix past the limit was let through by a flood of %d prefixes: %d", k+1, rec.Code)
			}
		}
		most = max(most, len(g.opens.heap), len(g.opens.pos))
	}
	// A newcomer gets its opens: limit of them in the minute.
	if rec := honestOpen(t, g, w, 0, "[2001:db8:aaaa:1::1]:5000"); rec.Code != 200 {
		t.Fatalf("a new client after a flood of %d prefixes: %d %s", flood, rec.Code, rec.Body)
	}
	if rec := honestOpen(t, g, w, 1, "[2001:db8:aaaa:1::2]:5000"); rec.Code != 200 {
		t.Fatalf("the new client's second open: %d %s", rec.Code, rec.Body)
	}
	if most > ipTableSize || len(g.opens.heap) != ipTableSize || len(g.opens.pos) != ipTableSize {
		t.Fatalf("the limiter held up to %d entries (%d/%d at the end), bound %d", most, len(g.opens.heap), len(g.opens.pos), ipTableSize)
	}
	// And the same after a flood from IPv4 addresses.
	for k := 0; k < ipTableSize+1000; k++ {
		serveFrom(g, fmt.Sprintf("10.%d.%d.%d:4000", k>>16, k>>8&0xff, k&0xff), "POST", OpenPath, nil, "(not an open)")
	}
	if rec := honestOpen(t, g, w, 2, "203.0.113.9:5000"); rec.Code != 200 {
		t.Fatalf("a new IPv4 client after a flood of IPv4 addresses: %d %s", rec.Code, rec.Body)
	}
}

// TestIPWindowPrefixes: IPv6 addresses count by ipv6_prefix, IPv4 ones
// (and IPv4-mapped IPv6) by address, zones ignored.
func TestIPWindowPrefixes(t *testing.T) {
	w := newIPWindow(1, time.Minute, 48)
	now := time.Now()
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"2001:db8:1::1", true}, {"2001:db8:1:ffff::2", false}, {"2001:db8:2::1", true},
		{"192.0.2.1", true}, {"192.0.2.2", true}, {"::ffff:192.0.2.1", false},
		{"fe80::1%eth0", true}, {"fe80::2%eth1", false},
	} {
		if got := w.allow(c.ip, now); got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.ip, got, c.want)
		}
	}
	// A new window forgets.
	if !w.allow("2001:db8:1::1", now.Add(time.Minute)) {
		t.Error("not allowed in the next window")
	}
}
