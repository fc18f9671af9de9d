package payment

import (
	"io"
	"mime"
	"net/http"
	"strings"
)

// WriteChallenge answers a request with problem p and the Payment
// challenges cs, as the draft asks of every 402: one WWW-Authenticate field
// per challenge (added beside those already set, such as the ECoupon
// scheme's), Cache-Control: no-store, and p as application/problem+json
// with status p.Status. When p names no challenge, it names the first of cs.
func WriteChallenge(w http.ResponseWriter, p *Problem, cs ...*Challenge) {
	h := w.Header()
	for _, c := range cs {
		h.Add("WWW-Authenticate", c.String())
	}
	if p.ChallengeID == "" && len(cs) > 0 {
		p.ChallengeID = cs[0].ID
	}
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", ContentTypeProblem)
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(p.JSON())
}

// SetReceipt sets the Payment-Receipt field of a paid response and makes
// the response private to shared caches, as the draft requires: "private"
// joins the Cache-Control directives the response has, and "public" leaves
// them.
func SetReceipt(h http.Header, r *Receipt) {
	h.Set(HeaderReceipt, r.Header())
	var kept []string
	private := false
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(d, "=")
			switch strings.ToLower(name) {
			case "":
				continue
			case "public":
				continue
			case "private":
				private = true
			}
			kept = append(kept, d)
		}
	}
	if !private {
		kept = append(kept, "private")
	}
	h.Set("Cache-Control", strings.Join(kept, ", "))
}

// SetHeader puts the credential in the request header field its challenge
// asks for (Challenge.CredentialHeader).
func (cr *Credential) SetHeader(h http.Header) error {
	v, err := cr.Header()
	if err != nil {
		return err
	}
	h.Set(cr.Challenge.CredentialHeader(), v)
	return nil
}

// ProblemFromResponse reads the problem details of a response whose
// Content-Type is application/problem+json, at most MaxProblemLen bytes
// of its body; it returns nil and no error for another content type.
func ProblemFromResponse(resp *http.Response) (*Problem, error) {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != ContentTypeProblem {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxProblemLen+1))
	if err != nil {
		return nil, fieldErr(ErrBadProblem, "", "reading the body: %v", err)
	}
	return ParseProblem(body)
}

// Offer returns the Payment challenges to answer a request with, honouring
// its Accept-Payment fields (AcceptPayment.Order); without them, or when
// they do not parse (the draft lets a server ignore them then), cs
// unchanged.
func Offer(req http.Header, cs []Challenge) []Challenge {
	vs := req.Values(HeaderAcceptPayment)
	if len(vs) == 0 {
		return cs
	}
	a, err := ParseAcceptPayment(strings.Join(vs, ","))
	if err != nil {
		return cs
	}
	return a.Order(cs)
}

// SpeaksPayment reports whether a request shows its client speaks the
// Payment scheme: it carries Accept-Payment, Payment-Authorization or an
// Authorization of the Payment scheme. The gate then answers refusals with
// problem details rather than the ECoupon scheme's JSON.
func SpeaksPayment(req http.Header) bool {
	if req.Get(HeaderAcceptPayment) != "" || req.Get(HeaderPaymentAuthorization) != "" {
		return true
	}
	for _, v := range req.Values("Authorization") {
		if len(v) > len(Scheme) && strings.EqualFold(v[:len(Scheme)], Scheme) && v[len(Scheme)] == ' ' {
			return true
		}
	}
	return false
}
