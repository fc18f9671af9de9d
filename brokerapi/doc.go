// Package brokerapi is the wire side of the ecoupons broker's HTTP+JSON
// API (docs/PROTOCOL.md): the bodies of its requests and answers that
// gates and wallets send and read, the reason codes of refused
// redemptions, and the signing (and verification) of requests for a
// broker. It links no database driver, so that the payment gate
// (package caddymodule) can use it without pulling in the broker's SQLite
// and PostgreSQL code; package broker implements the API with these
// types.
package brokerapi
