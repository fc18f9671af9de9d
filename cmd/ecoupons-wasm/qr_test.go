package main

import (
	"image"
	"image/color"
	"regexp"
	"strconv"
	"strings"
	"testing"

	qr "github.com/piglig/go-qr"

	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
)

// TestPairingQRDecodesToTheCode draws a real pairing code (a new wallet's
// device identity in transport form) as the browser wallet does, paints
// the SVG's rectangles into an image and decodes it: the QR code carries
// the code byte for byte, and fits a phone's screen.
func TestPairingQRDecodesToTheCode(t *testing.T) {
	w, err := wallet.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := w.Device("browser news.example")
	if err != nil {
		t.Fatal(err)
	}
	code := string(spki.Transport(d.Sexp()))
	svg, modules, err := pairingQR(code)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pairing code: %d bytes; QR code: %d modules wide with the quiet zone", len(code), modules)
	if modules > 100 {
		t.Errorf("the QR code is %d modules wide: too fine for a phone's screen", modules)
	}
	const px = 3
	img := image.NewGray(image.Rect(0, 0, modules*px, modules*px))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	rects := regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-\d+z`).FindAllStringSubmatch(svg, -1)
	if len(rects) == 0 || !strings.Contains(svg, `viewBox="0 0 `+strconv.Itoa(modules)+" "+strconv.Itoa(modules)+`"`) {
		t.Fatalf("not the SVG expected: %.200s", svg)
	}
	for _, r := range rects {
		x, _ := strconv.Atoi(r[1])
		y, _ := strconv.Atoi(r[2])
		n, _ := strconv.Atoi(r[3])
		for i := x * px; i < (x+n)*px; i++ {
			for j := y * px; j < (y+1)*px; j++ {
				img.SetGray(i, j, color.Gray{})
			}
		}
	}
	got, err := qr.Decode(img)
	if err != nil {
		t.Fatalf("decoding the QR code: %v", err)
	}
	if got != code {
		t.Fatalf("the QR code decodes to %q, want the pairing code %q", got, code)
	}
}
