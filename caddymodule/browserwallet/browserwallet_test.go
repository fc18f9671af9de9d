package browserwallet

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/internal/wasmsrc"
)

func get(t *testing.T, method, name string, h http.Header) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, Prefix+name, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	if !Serve(w, r, name) {
		t.Fatalf("%s not served", name)
	}
	return w
}

// TestServesTheWalletFiles: the service worker may control the whole
// site; the wasm goes gzipped to a client that takes it and plain to one
// that does not (the same bytes, a WebAssembly module); every file has
// its type; other names are not ours; only GET and HEAD.
func TestServesTheWalletFiles(t *testing.T) {
	sw := get(t, "GET", "sw.js", nil)
	if sw.Code != 200 || sw.Header().Get("Service-Worker-Allowed") != "/" || !strings.HasPrefix(sw.Header().Get("Content-Type"), "text/javascript") ||
		!strings.Contains(sw.Body.String(), "importScripts('wasm_exec.js')") {
		t.Fatalf("sw.js: %d %v", sw.Code, sw.Header())
	}
	gz := get(t, "GET", "wallet.wasm", http.Header{"Accept-Encoding": {"gzip, deflate, br"}})
	if gz.Code != 200 || gz.Header().Get("Content-Encoding") != "gzip" || gz.Header().Get("Content-Type") != "application/wasm" {
		t.Fatalf("wallet.wasm, gzip: %d %v", gz.Code, gz.Header())
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	plain := get(t, "GET", "wallet.wasm", http.Header{"Accept-Encoding": {"identity"}})
	if plain.Header().Get("Content-Encoding") != "" || !bytes.Equal(plain.Body.Bytes(), unzipped) || !bytes.HasPrefix(unzipped, []byte("\x00asm")) ||
		plain.Header().Get("ETag") == gz.Header().Get("ETag") {
		t.Fatalf("wallet.wasm, plain: %d bytes, %v", plain.Body.Len(), plain.Header())
	}
	for name, typ := range map[string]string{"wallet": "text/html", "client.js": "text/javascript", "wallet.js": "text/javascript",
		"ecoupons.js": "text/javascript", "wallet.css": "text/css", "wasm_exec.js": "text/javascript"} {
		if w := get(t, "GET", name, nil); w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), typ) || w.Body.Len() == 0 {
			t.Errorf("%s: %d %q", name, w.Code, w.Header().Get("Content-Type"))
		}
	}
	if w := get(t, "POST", "sw.js", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}
	if w := get(t, "HEAD", "wallet", nil); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
	for _, name := range []string{"open", "vendor", "assets/sw.js", "../go.mod", "wallet.wasm.gz", "wallet.wasm.stamp", ""} {
		if Serve(httptest.NewRecorder(), httptest.NewRequest("GET", Prefix+name, nil), name) {
			t.Errorf("%q served", name)
		}
	}
}

// TestEmbeddedWalletIsCurrent: the committed wallet.wasm.gz was built from
// the wallet's sources as they are (its stamp records their hash): after
// a change, run go generate ./caddymodule/browserwallet.
func TestEmbeddedWalletIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	root, err := wasmsrc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := wasmsrc.Hash(root)
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := os.ReadFile("assets/wallet.wasm.stamp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stamp), "\nsources "+sum+"\n") {
		t.Fatalf("the embedded wallet.wasm is stale (sources %s, stamp:\n%s): run go generate ./caddymodule/browserwallet", sum, stamp)
	}
}
