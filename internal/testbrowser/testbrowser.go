// Package testbrowser starts a headless Chromium for the tests that drive
// pages in a real browser (chromedp): the back office, the browser
// wallet.
package testbrowser

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Start starts a headless Chromium on the profile directory profile (a
// second Start on the same directory is the same browser restarted), or
// skips the test (fails it under CI=true) when none is installed. The
// context it returns expires after timeout; stop closes the browser, and
// runs at the test's end if not called before.
func Start(t testing.TB, profile string, timeout time.Duration) (ctx context.Context, stop func()) {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		msg := "skipping the browser test: no Chromium (apt-get install -y chromium)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " — CI=true, so this is a failure")
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel2 := chromedp.NewContext(actx)
	// The first run starts the browser, on a context without a deadline.
	if err := chromedp.Do(bctx); err != nil {
		cancel2()
		cancel()
		t.Fatalf("starting Chromium: %v", err)
	}
	tctx, cancel3 := context.WithTimeout(bctx, timeout)
	stop = func() {
		cancel3()
		cancel2()
		cancel()
	}
	t.Cleanup(stop)
	return tctx, stop
}
