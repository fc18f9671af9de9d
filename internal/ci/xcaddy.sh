#!/usr/bin/env bash
# Builds Caddy with the real xcaddy exactly as the README says
# (`xcaddy build --with github.com/ecoupons/ecoupons`, the module replaced
# by this checkout since it is not published), checks the modules it
# registers, builds the gate alone too (`--with …/caddymodule`), and
# serves the README's Caddyfile (the top-level one, with its paths and host
# moved to a temporary directory and a loopback port), expecting a 402 with
# an ECoupon challenge, a 404 for the free path's missing file and a 200
# for a free file. Run from the repository's root (`.ci/run` does).
set -euo pipefail
repo=$(pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)

GOBIN="$work/bin" go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
xcaddy="$work/bin/xcaddy"

# Our module is not published: xcaddy's `go get github.com/ecoupons/ecoupons`
# asks the module proxy for its versions before the replace applies, and
# the proxy here answers 403 (not "not found", so Go does not fall back to
# the replace). A file proxy listing v0.0.0 behind the default one (`|`:
# tried after any error) answers instead; the replace then supplies the code.
fp="$work/goproxy/github.com/ecoupons/ecoupons/@v"
mkdir -p "$fp"
echo v0.0.0 >"$fp/list"
echo '{"Version":"v0.0.0","Time":"2026-01-01T00:00:00Z"}' >"$fp/v0.0.0.info"
cp "$repo/go.mod" "$fp/v0.0.0.mod"
default_proxy=$(go env GOPROXY)
export GOPROXY="${default_proxy%%,*}|file://$work/goproxy"
export GONOSUMDB=github.com/ecoupons/ecoupons GOFLAGS=-mod=mod

cd "$work"
"$xcaddy" build "$caddy_version" --output "$work/caddy" --with github.com/ecoupons/ecoupons="$repo" >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log"; exit 1; }
"$work/caddy" list-modules | grep -q '^http.handlers.ecoupon$'
"$work/caddy" list-modules | grep -q '^http.handlers.ecoupon_broker$'
echo "xcaddy --with github.com/ecoupons/ecoupons: $(stat -c %s "$work/caddy") bytes, gate and broker registered"

"$xcaddy" build "$caddy_version" --output "$work/caddy-gate" --with github.com/ecoupons/ecoupons/caddymodule \
	--replace github.com/ecoupons/ecoupons="$repo" >"$work/build-gate.log" 2>&1 || { cat "$work/build-gate.log"; exit 1; }
"$work/caddy-gate" list-modules | grep -q '^http.handlers.ecoupon$'
if "$work/caddy-gate" list-modules | grep -q '^http.handlers.ecoupon_broker$'; then
	echo "the gate alone registers the broker module"; exit 1
fi
if go version -m "$work/caddy-gate" | grep -q 'modernc.org/sqlite'; then
	echo "the gate alone links SQLite"; exit 1
fi
echo "xcaddy --with …/caddymodule: $(stat -c %s "$work/caddy-gate") bytes, the gate alone"

# The README's Caddyfile, served by the xcaddy build.
(cd "$repo" && go run ./cmd/ecoupons broker init --dir "$work/keys" >/dev/null 2>&1)
mkdir -p "$work/srv/news" && echo free >"$work/srv/news/index.html"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s#^news.example {#http://127.0.0.1:$port {#" \
	-e "s#/etc/ecoupons/broker.pub#$work/keys/broker.pub#" \
	-e "s#/var/lib/ecoupons/spent.db#$work/spent.db#" \
	-e "s#/srv/news#$work/srv/news#" "$repo/Caddyfile" >"$work/Caddyfile"
XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config" "$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/run.log" 2>&1 &
for _ in $(seq 100); do
	curl -s -o /dev/null "http://127.0.0.1:$port/" && break
	sleep 0.1
done
code=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' "http://127.0.0.1:$port/premium/article")
if [ "$code" != 402 ] || ! grep -qi '^www-authenticate: ECoupon ' "$work/headers"; then
	echo "the README's Caddyfile under xcaddy's build answered $code:"; cat "$work/headers" "$work/body" "$work/run.log"; exit 1
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/index.html")
[ "$code" = 200 ] || { echo "free file: $code"; cat "$work/run.log"; exit 1; }
echo "the README's Caddyfile: 402 with an ECoupon challenge on /premium/, 200 on a free file"
