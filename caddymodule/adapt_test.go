package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var updateAdapt = flag.Bool("update", false, "rewrite the JSON half of testdata/caddyfile_adapt/*.caddyfiletest")

const adaptSep = "\n----------\n"

// TestCaddyfileAdapt checks each testdata/caddyfile_adapt/*.caddyfiletest:
// the Caddyfile above the separator adapts to the JSON below it.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if len(files) < 3 {
		t.Fatalf("only %d adapt tests", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, want, _ := strings.Cut(string(b), adaptSep)
		if *updateAdapt {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var pretty bytes.Buffer
			json.Indent(&pretty, out, "", "\t")
			if err := os.WriteFile(f, []byte(strings.TrimRight(cfg, "\n")+adaptSep+pretty.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !caddytest.CompareAdapt(t, f, cfg, "caddyfile", want) {
			t.Errorf("%s: adapted JSON differs (run go test ./caddymodule -run CaddyfileAdapt -update and review the diff)", f)
		}
	}
}

// TestCaddyfileErrors: every malformed directive is refused at adapt time
// with a message that says what to write.
func TestCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"price 0":             "price must be a positive integer",
		"price two":           "price must be a positive integer",
		"unit 0.001":          "unit takes a decimal value and a currency",
		"store":               "store needs a backend",
		"store tape":          "unknown store",
		"store memory now":    "store memory takes no arguments",
		"store redis":         "store redis takes a URL",
		"store redis_cluster": "store redis_cluster takes a URL naming its nodes",
		"store redis_cluster redis://a:1 p min_replicas x": "min_replicas must be a whole number",
		"store redis_cluster redis://a:1 p quorum 2":       "takes a URL, a key prefix and 'min_replicas <n>'",
		"store bolt a b":                  "store bolt takes a path, 'commit_delay <duration>'",
		"store bolt a lease_idle forever": "lease_idle must be a duration",
		"store bolt a lease_idle 48h":     "lease_idle must be a duration from 0 (the default, 30s) to 24h",
		"store bolt lease_flush 5m":       "lease_flush must be a duration from 0 (the default, 1s) to 1m",
		"store pebble d x":                "store pebble takes an optional directory, 'lease_idle <duration>'",
		"store pebble lease_flush -1s":    "pebble store: lease_flush must be",
		"store bolt a commit_delay soon":  "commit_delay must be a duration",
		"lane_rate fast":                  "lane_rate must be a number",
		"lane_cache 0":                    "lane_cache must be a positive number of lanes",
		"nonce_ttl -1s":                   "nonce_ttl must be a positive duration",
		"max_jump 0":                      "max_jump must be a positive integer",
		"opens_per_minute":                "wrong argument count",
		"ipv6_prefix 0":                   "ipv6_prefix must be a positive integer",
		"ipv6_prefix 129":                 "ipv6_prefix must be 1 to 128 bits",
		"denominations":                   "denominations takes one or more URLs or files",
		"vendor a b":                      "wrong argument count",
		"colour blue":                     "unknown ecoupon option",
		"max_open_bytes -5":               "max_open_bytes must be a positive integer",
		"max_body 0":                      "max_body must be a positive integer",
		"mode paranoid":                   "mode must be offline, semi or online",
		"broker_timeout 1ms":              "broker_timeout must be a duration of at least 100ms",
		"meter":                           "meter takes what a unit counts and how many",
		"meter bytes":                     "meter takes what a unit counts and how many",
		"meter frames 10":                 "meter takes what a unit counts and how many",
		"meter bytes 0":                   "meter takes what a unit counts and how many",
		"meter events 1.5":                "meter takes what a unit counts and how many",
		"meter seconds 2d":                "meter takes what a unit counts and how many",
		"meter bytes 1 MiB":               "meter takes what a unit counts and how many",
		"meter_window 0":                  "meter_window must be a positive integer",
		"meter_window many":               "meter_window must be a positive integer",
		"meter_hold 10ms":                 "meter_hold must be a duration from 100ms to 1h",
		"meter_hold 2h":                   "meter_hold must be a duration from 100ms to 1h",
		"meter_hold soon":                 "meter_hold must be a duration from 100ms to 1h",
	}
	for line, want := range cases {
		cfg := ":8080 {\n\tecoupon {\n\t\tvendor news.example\n\t\tbroker_key k.pub\n\t\t" + line + "\n\t}\n\trespond ok\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", line, err, want)
		}
	}
	// An argument on the directive line itself (not a matcher).
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n\tecoupon /a extra\n\trespond ok\n}\n"), nil); err == nil {
		t.Error("extra directive argument accepted")
	}
}

// TestTopLevelCaddyfileAdapts keeps the repository's worked example valid.
func TestTopLevelCaddyfileAdapts(t *testing.T) {
	b, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	out, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt(b, nil)
	if err != nil || len(warn) > 0 {
		t.Fatalf("the top-level Caddyfile does not adapt cleanly: %v %v", err, warn)
	}
	if !bytes.Contains(out, []byte(`"handler":"ecoupon"`)) {
		t.Fatal("no ecoupon handler in the adapted config")
	}
}
