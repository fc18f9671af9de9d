// Package ecoupons registers every Caddy module of ecoupons, so that
//
//	xcaddy build --with github.com/ecoupons/ecoupons
//
// builds a Caddy with the payment gate (the ecoupon directive and its
// spent-state stores) and the broker (ecoupon_broker). A Caddy with the
// gate alone imports github.com/ecoupons/ecoupons/caddymodule instead
// (it links neither the broker's ledger nor SQLite). Importing this
// package has no other effect.
package ecoupons

import (
	_ "github.com/ecoupons/ecoupons/caddymodule"              // the gate
	_ "github.com/ecoupons/ecoupons/caddymodule/brokermodule" // the broker
)
