package payment

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/ecoupons/ecoupons/coupons"
)

// TestEveryGateCodeHasAProblem: each reason code coupons/codes.go documents
// as sent by the gate has an entry in codeProblems, so a new code gets a
// deliberate problem type.
func TestEveryGateCodeHasAProblem(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "../coupons/codes.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if !strings.Contains(vs.Doc.Text(), "by the gate") {
				continue
			}
			for _, v := range vs.Values {
				code, _ := strconv.Unquote(v.(*ast.BasicLit).Value)
				n++
				if _, ok := codeProblems[code]; !ok {
					t.Errorf("gate code %q has no problem type in codeProblems", code)
				}
			}
		}
	}
	if n < 30 {
		t.Errorf("found only %d gate codes", n)
	}
	for code, pc := range codeProblems {
		if pc.typ != ProblemAboutBlank && pc.status != 402 {
			t.Errorf("%s: the draft's payment problems are 402, not %d", code, pc.status)
		}
	}
}

func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		code, typ string
		status    int
	}{
		{coupons.CodePaymentRequired, ProblemPaymentRequired, 402},
		{coupons.CodeInsufficientPayment, ProblemPaymentInsufficient, 402},
		{coupons.CodeBadPaymentHeader, ProblemMalformedCredential, 402},
		{coupons.CodeBadNonce, ProblemInvalidChallenge, 402},
		{coupons.CodeBookExpired, ProblemPaymentExpired, 402},
		{coupons.CodeCouponSpent, ProblemVerificationFailed, 402},
		{coupons.CodeLaneRateLimited, ProblemAboutBlank, 429},
		{coupons.CodeInsufficientFunds, ProblemVerificationFailed, 402},
	} {
		p := NewProblem(tc.code, "d")
		if p.Type != tc.typ || p.Status != tc.status || p.Title == "" || p.Code != tc.code {
			t.Errorf("%s: %+v", tc.code, p)
		}
		back, err := ParseProblem(p.JSON())
		if err != nil || *back != *p {
			t.Errorf("%s: round trip %+v %v", tc.code, back, err)
		}
	}
	for _, tc := range []struct {
		err    error
		typ    string
		status int
	}{
		{ErrNoCredential, ProblemPaymentRequired, 402},
		{fieldErr(ErrBadCredential, "", "x"), ProblemMalformedCredential, 402},
		{fieldErr(ErrInvalidChallenge, "id", "x"), ProblemInvalidChallenge, 402},
		{fieldErr(ErrExpired, "expires", "x"), ProblemPaymentExpired, 402},
		{fieldErr(ErrMethodUnsupported, "method", "x"), ProblemMethodUnsupported, 400},
	} {
		if p := ProblemForError(tc.err); p.Type != tc.typ || p.Status != tc.status {
			t.Errorf("%v: %+v", tc.err, p)
		}
	}
	if p, err := ParseProblem([]byte(`{"status":429,"x":1}`)); err != nil || p.Type != ProblemAboutBlank {
		t.Errorf("defaults: %+v %v", p, err)
	}
	for _, bad := range []string{`[]`, `{"status":1000}`, `{"type":1}`} {
		if _, err := ParseProblem([]byte(bad)); !errors.Is(err, ErrBadProblem) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestReceiptRefuses(t *testing.T) {
	enc := func(s string) string { return b64.EncodeToString([]byte(s)) }
	for name, h := range map[string]string{
		"status":    enc(`{"status":"failed","method":"ecoupon","timestamp":"2026-12-03T06:00:00Z","reference":"r"}`),
		"method":    enc(`{"status":"success","method":"","timestamp":"2026-12-03T06:00:00Z","reference":"r"}`),
		"timestamp": enc(`{"status":"success","method":"ecoupon","timestamp":"today","reference":"r"}`),
		"reference": enc(`{"status":"success","method":"ecoupon","timestamp":"2026-12-03T06:00:00Z"}`),
		"base64":    "e30=",
		"oversized": strings.Repeat("A", MaxReceiptLen+1),
		// Found by FuzzParseReceipt: bad bytes in a reference were read
		// as U+FFFD, so the receipt written back was not the one read,
		// and past MaxReceiptLen.
		"not UTF-8": enc("{\"status\":\"success\",\"method\":\"ecoupon\",\"timestamp\":\"2026-12-03T06:00:00Z\",\"reference\":\"r\xff\"}"),
	} {
		if _, err := ParseReceipt(h); !errors.Is(err, ErrBadReceipt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	r := NewReceipt(goldenPayment().Lane, 3, nil, goldenNow)
	if r.Reference != r.Lane+":3" {
		t.Errorf("reference without TESLA: %q", r.Reference)
	}
	if tr, err := r.TESLA(); tr != nil || err != nil {
		t.Errorf("TESLA of a plain reference: %v %v", tr, err)
	}
}
