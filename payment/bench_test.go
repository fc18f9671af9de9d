package payment

import (
	"testing"
	"time"
)

func BenchmarkIssueChallenge(b *testing.B) {
	bd, _ := NewBinder(goldenSecret[:])
	r := testRequest()
	exp := goldenNow.Add(5 * time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		c, err := bd.Issue("news.example", IntentCharge, r, exp, false)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.String()
	}
}

func BenchmarkParseChallenges(b *testing.B) {
	h := goldenChallenge(b).String()
	b.ReportAllocs()
	for b.Loop() {
		if cs, err := ParseChallenges(h); err != nil || len(cs) != 1 {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyChallenge(b *testing.B) {
	bd, _ := NewBinder(goldenSecret[:])
	c := goldenChallenge(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := bd.Verify(c, goldenNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormatCredential(b *testing.B) {
	c := goldenChallenge(b)
	p := goldenPayment()
	b.ReportAllocs()
	for b.Loop() {
		cr, err := NewCredential(c, p, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cr.Header(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCredential(b *testing.B) {
	cr, _ := NewCredential(goldenChallenge(b), goldenPayment(), nil)
	h, _ := cr.Header()
	b.ReportAllocs()
	for b.Loop() {
		cr, err := ParseCredential(h)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := cr.ECoupon(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormatReceipt(b *testing.B) {
	lane, tr := goldenPayment().Lane, goldenTESLA()
	b.ReportAllocs()
	for b.Loop() {
		_ = NewReceipt(lane, 1, tr, goldenNow).Header()
	}
}

func BenchmarkParseAcceptPayment(b *testing.B) {
	h := "ecoupon/charge, ecoupon/session;q=0.9, lightning/*;q=0.5, */*;q=0.1"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAcceptPayment(h); err != nil {
			b.Fatal(err)
		}
	}
}
