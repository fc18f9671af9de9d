// Package browserwallet holds the browser wallet's files that a gate
// serves under /.well-known/ecoupons/: the wallet (cmd/ecoupons-wasm,
// the Go wallet compiled to WebAssembly, gzipped), Go's wasm_exec.js, the
// service worker that pays the site's 402s with it, the pages' script, the
// wallet page and a loader for web apps on other origins. It imports no
// Caddy: a gate-only build embeds it as it is.
//
// The wasm is built by go generate ./caddymodule/browserwallet (or go run
// ./internal/wasmbuild) and committed, so that a module build (go install,
// xcaddy) needs no generator; TestEmbeddedWalletIsCurrent fails when the
// wallet's sources changed since.
package browserwallet

//go:generate go run ../../internal/wasmbuild

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Prefix is where a gate serves the files.
const Prefix = "/.well-known/ecoupons/"

// files maps the paths served (after Prefix) to their file in assets and
// content type.
var files = map[string][2]string{
	"sw.js":        {"sw.js", "text/javascript; charset=utf-8"},
	"wasm_exec.js": {"wasm_exec.js", "text/javascript; charset=utf-8"},
	"client.js":    {"client.js", "text/javascript; charset=utf-8"},
	"wallet.js":    {"wallet.js", "text/javascript; charset=utf-8"},
	"ecoupons.js":  {"ecoupons.js", "text/javascript; charset=utf-8"},
	"wallet.css":   {"wallet.css", "text/css; charset=utf-8"},
	"wallet":       {"wallet.html", "text/html; charset=utf-8"},
	"wallet.wasm":  {"wallet.wasm.gz", "application/wasm"},
}

type asset struct {
	data []byte
	etag string
}

var (
	cacheMu sync.Mutex
	cache   = map[string]asset{}
)

func load(file string) (asset, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if a, ok := cache[file]; ok {
		return a, nil
	}
	b, err := assets.ReadFile("assets/" + file)
	if err != nil {
		return asset{}, err
	}
	sum := sha256.Sum256(b)
	a := asset{data: b, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
	cache[file] = a
	return a, nil
}

// Serve answers a GET or HEAD of one of the files, name being the path
// after Prefix; it reports false (and writes nothing) for another name.
// The files are public: any origin may load them (the library loader and
// the wasm are fetched by apps on other origins). The service worker is
// allowed to control the whole site (Service-Worker-Allowed: /). The
// wasm goes gzipped to a client that accepts it.
func Serve(w http.ResponseWriter, r *http.Request, name string) bool {
	f, ok := files[name]
	if !ok {
		return false
	}
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return true
	}
	a, err := load(f[0])
	if err != nil {
		http.Error(w, "the browser wallet is not built into this gate", http.StatusNotFound)
		return true
	}
	h.Set("Content-Type", f[1])
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("ETag", a.etag)
	if name == "sw.js" {
		h.Set("Service-Worker-Allowed", "/")
	}
	if name == "wallet" {
		h.Set("Content-Security-Policy", "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
	}
	var body io.ReadSeeker = bytes.NewReader(a.data)
	if strings.HasSuffix(f[0], ".gz") {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			h.Set("Content-Encoding", "gzip")
		} else {
			zr, err := gzip.NewReader(bytes.NewReader(a.data))
			if err == nil {
				var raw []byte
				if raw, err = io.ReadAll(zr); err == nil {
					body = bytes.NewReader(raw)
				}
			}
			if err != nil {
				http.Error(w, "the embedded wallet is corrupt", http.StatusInternalServerError)
				return true
			}
			h.Set("ETag", strings.TrimSuffix(a.etag, `"`)+`-raw"`)
		}
	}
	http.ServeContent(w, r, path.Base(name), time.Time{}, body)
	return true
}

// acceptsGzip reports whether r's Accept-Encoding takes gzip (or *)
// with a q above 0.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if enc = strings.TrimSpace(enc); !strings.EqualFold(enc, "gzip") && enc != "*" {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		return q > 0
	}
	return false
}
