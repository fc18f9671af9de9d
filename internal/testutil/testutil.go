// Package testutil holds what the packages' tests share: deterministic
// test keys, golden files and the two baseline benchmarks BENCHMARKS.md
// reports ratios to.
package testutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"os"
	"slices"
	"testing"
	"time"
)

// Key returns the deterministic Ed25519 test key named label: its seed is
// SHA-256("ecoupons test key " || label) (docs/PROTOCOL.md §0).
func Key(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("ecoupons test key " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// Golden compares got with the file at path, or rewrites the file when
// update is set (the packages' -update flag).
func Golden(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the package's tests with -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the code produces:\n got: %q\nwant: %q", path, got, want)
	}
}

// BenchSHA256_32 is the first baseline: one SHA-256 of 32 bytes.
func BenchSHA256_32(b *testing.B) {
	var in [32]byte
	b.ReportAllocs()
	clock := NewCPUClock(b)
	for b.Loop() {
		in = sha256.Sum256(in[:])
	}
	clock.Report(b)
}

// BenchEd25519Verify is the second baseline: one Ed25519 verification.
func BenchEd25519Verify(b *testing.B) {
	k := Key("benchmark")
	msg := []byte("ecoupons benchmark message")
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

// Ed25519VerifyNs measures one Ed25519 verification now, in nanoseconds
// (the median of 5 runs of 200), for a benchmark to report its cost as a
// multiple of it measured in the same run (ReportEd25519Multiple).
func Ed25519VerifyNs() float64 {
	k := Key("benchmark")
	msg := []byte("ecoupons benchmark message")
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	runs := make([]float64, 5)
	for r := range runs {
		start := time.Now()
		for range 200 {
			if !ed25519.Verify(pub, msg, sig) {
				panic("testutil: ed25519 verify failed")
			}
		}
		runs[r] = float64(time.Since(start).Nanoseconds()) / 200
	}
	slices.Sort(runs)
	return runs[len(runs)/2]
}

// ReportEd25519Multiple reports b's time per operation as a multiple of
// one Ed25519 verification, the metric "x-ed25519-verify"; ed25519Ns is
// Ed25519VerifyNs measured before the benchmark's loop. Call it after
// the loop.
func ReportEd25519Multiple(b *testing.B, ed25519Ns float64) {
	if b.N == 0 || ed25519Ns <= 0 {
		return
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/ed25519Ns, "x-ed25519-verify")
	b.ReportMetric(ed25519Ns, "ed25519-ns")
}

// KeyP256 returns the deterministic ECDSA P-256 test key named label: its
// scalar is SHA-256("ecoupons test key " || label).
func KeyP256(t testing.TB, label string) *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte("ecoupons test key " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}
