package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrokerInitAndRun: `ecoupons broker init` writes keys, ledger and a
// Caddyfile that adapts; `ecoupons broker run` serves the API and the
// back office until SIGTERM, then exits cleanly; init never overwrites.
func TestBrokerInitAndRun(t *testing.T) {
	e := setup(t)
	dir := filepath.Join(e.dir, "newbroker")
	out, err := exec.Command(e.bin, "broker", "init", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("broker init: %v\n%s", err, out)
	}
	for _, f := range []string{"broker.pem", "broker.pub", "admin.pem", "admin.pub", "broker.db", "Caddyfile"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("broker init wrote no %s", f)
		}
	}
	if out, err := exec.Command(e.bin, "adapt", "--config", filepath.Join(dir, "Caddyfile")).CombinedOutput(); err != nil {
		t.Fatalf("the Caddyfile of broker init does not adapt: %v\n%s", err, out)
	}
	if out, err := exec.Command(e.bin, "broker", "init", "--dir", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "refusing to overwrite") {
		t.Fatalf("a second init: %v\n%s", err, out)
	}

	addr := freeAddr(t)
	run := exec.Command(e.bin, "broker", "run", "--dir", dir, "--listen", addr)
	run.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	var log strings.Builder
	run.Stdout, run.Stderr = &log, &log
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer run.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker run did not start:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "broker.pub"))
	if code, body := get("/v1/broker"); code != 200 || strings.TrimSpace(body) != strings.TrimSpace(string(pub)) {
		t.Errorf("GET /v1/broker: %d %q, want the key of broker.pub", code, body)
	}
	if code, body := get("/office/"); code != 401 || !strings.Contains(body, "not signed in") {
		t.Errorf("GET /office/: %d %q", code, body)
	}
	run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		t.Fatalf("broker run after SIGTERM: %v\n%s", err, log.String())
	}
}
