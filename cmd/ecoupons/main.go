// Command ecoupons is Caddy with its standard modules and ecoupons' gate
// and stores: `ecoupons run --config Caddyfile`, `ecoupons adapt`, and
// every other Caddy subcommand work as they do for caddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/ecoupons/ecoupons/caddymodule"
)

func main() {
	caddycmd.Main()
}
