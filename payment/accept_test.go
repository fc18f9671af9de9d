package payment

import (
	"errors"
	"strings"
	"testing"
)

func TestAcceptPayment(t *testing.T) {
	a, err := ParseAcceptPayment("ecoupon/charge, ecoupon/session;q=0 , lightning/*;q=0.5,, */session; Q=0.25, */*;q=0.001")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, intent string
		q              int
	}{
		{"ecoupon", "charge", 1000},
		{"ecoupon", "session", 0},
		{"lightning", "session", 500},
		{"tempo", "session", 250},
		{"tempo", "charge", 1},
	} {
		if q, ok := a.Q(tc.method, tc.intent); !ok || q != tc.q {
			t.Errorf("%s/%s: q %d %v, want %d", tc.method, tc.intent, q, ok, tc.q)
		}
	}
	if a.Accepts("ecoupon", "session") || !a.Accepts("ecoupon", "charge") {
		t.Error("Accepts")
	}
	cs := []Challenge{
		{ID: "1", Method: "tempo", Intent: "charge"},
		{ID: "2", Method: "ecoupon", Intent: "session"},
		{ID: "3", Method: "lightning", Intent: "charge"},
		{ID: "4", Method: "ecoupon", Intent: "charge"},
		{ID: "5", Method: "lightning", Intent: "session"},
	}
	var ids []string
	for _, c := range a.Order(cs) {
		ids = append(ids, c.ID)
	}
	if got := strings.Join(ids, ","); got != "4,3,5,1" {
		t.Errorf("order %s", got)
	}
	none, _ := ParseAcceptPayment("card/charge")
	if got := none.Order(cs); len(got) != len(cs) {
		t.Errorf("no match should keep the server's list: %d", len(got))
	}
	var absent AcceptPayment
	if !absent.Accepts("ecoupon", "charge") {
		t.Error("an absent field accepts everything")
	}
}

func TestAcceptPaymentRefuses(t *testing.T) {
	for _, h := range []string{
		"ecoupon", "Ecoupon/charge", "ecoupon/charge;q=2", "ecoupon/charge;q=1.001", "ecoupon/charge;q=0.0001",
		"ecoupon/charge;", "ecoupon/charge;x=1", "ecoupon/charge;q=.5", "/charge", "ecoupon/",
		strings.Repeat("a/b,", MaxAcceptPaymentLen),
	} {
		if _, err := ParseAcceptPayment(h); !errors.Is(err, ErrBadAcceptPayment) {
			t.Errorf("%.30q: %v", h, err)
		}
	}
}
