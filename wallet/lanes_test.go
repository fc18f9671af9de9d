package wallet

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TestProxyAnswers503OnlyAfterLaneWait: through the paying proxy, more
// parallel requests than lanes wait for a lane; one that waited LaneWait
// in vain gets 503 with Retry-After (not a 402 "no lane left").
func TestProxyAnswers503OnlyAfterLaneWait(t *testing.T) {
	w, broker := bookWallet(t)
	addBook(t, w, broker, 2, 16, true)
	g := &bookGate{hold: make(chan struct{})}
	wait := time.Second
	router := &Router{Base: g, Books: func(vendor string) (*Chooser, error) {
		es, err := w.BooksFor(vendor)
		if err != nil {
			return nil, err
		}
		return &Chooser{Entries: es, Open: func(e *BookEntry) (*Transport, error) {
			tr, err := OpenTransport(e.Holder, e.StatePath, e.Lanes...)
			if err == nil {
				tr.LaneWait, tr.Hosts = wait, []string{"127.0.0.1"}
			}
			return tr, err
		}}, nil
	}}
	up, _ := url.Parse("http://news.example")
	proxy := httptest.NewServer(NewProxy(up, router))
	defer proxy.Close()
	get := func() (*http.Response, time.Duration) {
		start := time.Now()
		resp, err := http.Get(proxy.URL + "/x")
		if err != nil {
			t.Error(err)
			return nil, 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, time.Since(start)
	}
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _ := get(); resp != nil {
				codes[i] = resp.StatusCode
			}
		}()
	}
	for g.inPaid.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	// Two requests hold the lanes, two wait: released within their wait,
	// all four are served.
	time.Sleep(wait / 5)
	close(g.hold)
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d: %d, want 200 (it should have waited for a lane)", i, c)
		}
	}
	// Lanes held for longer than the wait: 503 with Retry-After, after it.
	g.hold = make(chan struct{})
	g.inPaid.Store(0)
	defer close(g.hold)
	for range 2 {
		go get()
	}
	for g.inPaid.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	resp, took := get()
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %v, want 503 with Retry-After", resp)
	}
	if took < wait {
		t.Fatalf("503 after %v, before the lane wait of %v", took, wait)
	}
}
