package brokermodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestCaddyfileAdapt checks each testdata/caddyfile_adapt/*.caddyfiletest:
// the Caddyfile above the separator adapts to the JSON below it.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no adapt tests")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, want, _ := strings.Cut(string(b), "\n----------\n")
		if !caddytest.CompareAdapt(t, f, cfg, "caddyfile", want) {
			t.Errorf("%s: adapted JSON differs", f)
		}
	}
}
