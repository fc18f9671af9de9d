package payment

import (
	"slices"
	"strings"
)

// PaymentRange is one element of Accept-Payment: a method and an intent,
// either of which may be "*", with its weight in thousandths (q=0.5 is
// 500; no q is 1000; 0 means "do not use").
type PaymentRange struct {
	Method string // a payment method identifier or "*"
	Intent string // an intent or "*"
	Q      int    // the weight in thousandths, 0…1000
}

// AcceptPayment is a parsed Accept-Payment field, in the client's order.
type AcceptPayment []PaymentRange

// ParseAcceptPayment parses an Accept-Payment value (several field lines
// joined with ","):
//
//	Accept-Payment = #( payment-method-or-* "/" intent-or-* [ weight ] )
//	weight         = OWS ";" OWS "q=" qvalue                ; RFC 9110 §12.4.2
//
// Errors match ErrBadAcceptPayment; the draft lets a server then ignore
// the field.
func ParseAcceptPayment(h string) (AcceptPayment, error) {
	if len(h) > MaxAcceptPaymentLen {
		return nil, tooLarge(ErrBadAcceptPayment, len(h), MaxAcceptPaymentLen)
	}
	var out AcceptPayment
	for elem := range strings.SplitSeq(h, ",") {
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue // #rule: empty list elements are allowed
		}
		rng, params, _ := strings.Cut(elem, ";")
		rng = strings.TrimRight(rng, " \t")
		m, in, ok := strings.Cut(rng, "/")
		if !ok || !(m == "*" || isMethodID(m)) || !(in == "*" || isIntent(in)) {
			return nil, fieldErr(ErrBadAcceptPayment, "", "%q is not method/intent", clip(rng))
		}
		r := PaymentRange{Method: m, Intent: in, Q: 1000}
		if params != "" || strings.Contains(elem, ";") {
			p := strings.Trim(params, " \t")
			if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
				return nil, fieldErr(ErrBadAcceptPayment, "q", "%q is not a weight", clip(p))
			}
			q, ok := parseQValue(p[2:])
			if !ok {
				return nil, fieldErr(ErrBadAcceptPayment, "q", "%q is not a qvalue", clip(p[2:]))
			}
			r.Q = q
		}
		out = append(out, r)
	}
	return out, nil
}

// parseQValue: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
func parseQValue(s string) (int, bool) {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return q, true
	}
	if s[1] != '.' {
		return 0, false
	}
	scale := 100
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		q += int(s[i]-'0') * scale
		scale /= 10
	}
	return q, q <= 1000
}

// Q returns the client's weight for method and intent, from the most
// specific range matching them (method/intent before method/* before
// */intent before */*), and whether any does. An absent field
// (a nil AcceptPayment) accepts everything at 1000.
func (a AcceptPayment) Q(method, intent string) (int, bool) {
	if a == nil {
		return 1000, true
	}
	best, q := -1, 0
	for _, r := range a {
		spec := -1
		switch {
		case r.Method == method && r.Intent == intent:
			spec = 3
		case r.Method == method && r.Intent == "*":
			spec = 2
		case r.Method == "*" && r.Intent == intent:
			spec = 1
		case r.Method == "*" && r.Intent == "*":
			spec = 0
		}
		if spec > best {
			best, q = spec, r.Q
		}
	}
	return q, best >= 0
}

// Accepts reports whether the client takes method and intent (q > 0).
func (a AcceptPayment) Accepts(method, intent string) bool {
	q, ok := a.Q(method, intent)
	return ok && q > 0
}

// Order returns the challenges to offer, as the draft asks: those the
// client accepts, by descending weight, the server's order kept among
// equals. When none is accepted it returns cs unchanged (the draft lets
// the server ignore the field then).
func (a AcceptPayment) Order(cs []Challenge) []Challenge {
	if a == nil {
		return cs
	}
	type offer struct {
		c Challenge
		q int
	}
	var offers []offer
	for _, c := range cs {
		if q, ok := a.Q(c.Method, c.Intent); ok && q > 0 {
			offers = append(offers, offer{c, q})
		}
	}
	if len(offers) == 0 {
		return cs
	}
	slices.SortStableFunc(offers, func(x, y offer) int { return y.q - x.q })
	out := make([]Challenge, len(offers))
	for i, o := range offers {
		out[i] = o.c
	}
	return out
}

// String formats a as an Accept-Payment value; ParseAcceptPayment reads it
// back to a.
func (a AcceptPayment) String() string {
	var b []byte
	for i, r := range a {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, r.Method...)
		b = append(b, '/')
		b = append(b, r.Intent...)
		switch {
		case r.Q >= 1000:
		case r.Q <= 0:
			b = append(b, ";q=0"...)
		default:
			d := []byte{'0' + byte(r.Q/100), '0' + byte(r.Q/10%10), '0' + byte(r.Q%10)}
			for len(d) > 1 && d[len(d)-1] == '0' {
				d = d[:len(d)-1]
			}
			b = append(b, ";q=0."...)
			b = append(b, d...)
		}
	}
	return string(b)
}
