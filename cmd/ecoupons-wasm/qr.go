package main

import (
	"fmt"
	"strings"

	qr "github.com/piglig/go-qr"
)

// qrBorder is the quiet zone around a QR code, in modules (ISO/IEC 18004
// asks for 4).
const qrBorder = 4

// pairingQR draws code as a QR code (byte mode, error correction L, or
// higher when that fits the same size: a screen is not a worn label, and
// fewer modules scan more easily) in an SVG image, one unit per module,
// and returns it with its width in modules, quiet zone included. A pairing
// code is about 550 bytes: a version 16 symbol (81 modules); the largest
// QR code holds 2953 bytes at L.
func pairingQR(code string) (svg string, modules int, err error) {
	q, err := qr.EncodeBinary([]byte(code), qr.Low)
	if err != nil {
		return "", 0, fmt.Errorf("pairing code as a QR code: %w", err)
	}
	n := q.Size()
	modules = n + 2*qrBorder
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges"><rect width="100%%" height="100%%" fill="#fff"/><path fill="#000" d="`, modules, modules)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if !q.Module(x, y) {
				continue
			}
			// A run of dark modules is one rectangle.
			run := 1
			for x+run < n && q.Module(x+run, y) {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x+qrBorder, y+qrBorder, run, run)
			x += run - 1
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String(), modules, nil
}
