// Package wasmsrc hashes the sources of the browser wallet
// (cmd/ecoupons-wasm and the module's packages it imports, as built for
// GOOS=js GOARCH=wasm): the build stamp records the hash, and a test
// compares it to tell a stale embedded wallet.
package wasmsrc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ModuleRoot is the directory of the main module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("wasmsrc: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("wasmsrc: not inside the module")
	}
	return filepath.Dir(mod), nil
}

// Hash is the SHA-256 of the wallet's Go sources within the module (their
// paths relative to root and contents) and of go.mod, hex.
func Hash(root string) (string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{end}}{{end}}`, "./cmd/ecoupons-wasm")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("wasmsrc: go list: %w", err)
	}
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) < 2 {
			continue
		}
		for _, f := range parts[1:] {
			paths = append(paths, filepath.Join(parts[0], f))
		}
	}
	paths = append(paths, filepath.Join(root, "go.mod"))
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
