// Command ecoupons is Caddy with its standard modules, ecoupons' gate and
// stores (package caddymodule) and its broker module (package
// caddymodule/brokermodule): `ecoupons run --config Caddyfile`, `ecoupons
// adapt`, and every other Caddy subcommand work as they do for caddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/ecoupons/ecoupons/caddymodule"
	_ "github.com/ecoupons/ecoupons/caddymodule/brokermodule"
)

func main() {
	caddycmd.Main()
}
