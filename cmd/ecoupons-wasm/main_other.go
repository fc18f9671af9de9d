//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

// main: the browser wallet runs in a browser only; go run ./internal/wasmbuild
// builds it (GOOS=js GOARCH=wasm).
func main() {
	fmt.Fprintln(os.Stderr, "ecoupons-wasm is the browser wallet: build it with GOOS=js GOARCH=wasm (go run ./internal/wasmbuild)")
	os.Exit(2)
}
