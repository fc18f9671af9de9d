// Command wasmbuild builds the browser wallet (cmd/ecoupons-wasm) for
// GOOS=js GOARCH=wasm and writes what the gate embeds into
// caddymodule/browserwallet/assets: wallet.wasm.gz, Go's wasm_exec.js and
// wallet.wasm.stamp (the Go version, the sizes and a hash of the wallet's
// sources, which TestEmbeddedWalletIsCurrent compares). Run it from
// anywhere in the module: go run ./internal/wasmbuild (or go generate
// ./caddymodule/browserwallet).
package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ecoupons/ecoupons/internal/wasmsrc"
)

func main() {
	log.SetFlags(0)
	root, err := wasmsrc.ModuleRoot()
	if err != nil {
		log.Fatal(err)
	}
	out := filepath.Join(root, "caddymodule", "browserwallet", "assets")
	tmp, err := os.MkdirTemp("", "wasmbuild")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	wasm := filepath.Join(tmp, "wallet.wasm")
	// -trimpath and no DWARF or symbol table: smaller, and the same bytes
	// wherever it is built with the same Go.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", wasm, "./cmd/ecoupons-wasm")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
	if err := cmd.Run(); err != nil {
		log.Fatalf("wasmbuild: go build: %v", err)
	}
	raw, err := os.ReadFile(wasm)
	if err != nil {
		log.Fatal(err)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		log.Fatal(err)
	}
	execJS, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		log.Fatal(err)
	}
	sum, err := wasmsrc.Hash(root)
	if err != nil {
		log.Fatal(err)
	}
	ver, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		log.Fatal(err)
	}
	stamp := fmt.Sprintf("go %s\nsources %s\nraw %d\ngzip %d\n", strings.TrimSpace(string(ver)), sum, len(raw), gz.Len())
	for name, data := range map[string][]byte{"wallet.wasm.gz": gz.Bytes(), "wasm_exec.js": execJS, "wallet.wasm.stamp": []byte(stamp)} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("wallet.wasm: %d bytes, %d gzipped (%s)\n", len(raw), gz.Len(), filepath.Join(out, "wallet.wasm.gz"))
}
