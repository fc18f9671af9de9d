package payment

import (
	"strconv"
	"strings"
)

// jcsObject writes a JSON object in JCS form directly. Members must be
// added in JCS order; every name here is ASCII, so that is byte order.
// TestEmittersAreCanonical checks each emitter against Canonicalize.
type jcsObject struct {
	b     []byte
	first bool
}

func openObject(dst []byte) jcsObject { return jcsObject{b: append(dst, '{'), first: true} }

func (o *jcsObject) name(n string) {
	if !o.first {
		o.b = append(o.b, ',')
	}
	o.first = false
	o.b = append(o.b, '"')
	o.b = append(o.b, n...)
	o.b = append(o.b, '"', ':')
}

func (o *jcsObject) str(n, v string) {
	o.name(n)
	o.b = appendJCSString(o.b, v)
}

func (o *jcsObject) optStr(n, v string) {
	if v != "" {
		o.str(n, v)
	}
}

func (o *jcsObject) uint(n string, v uint64) {
	o.name(n)
	o.b = strconv.AppendUint(o.b, v, 10)
}

func (o *jcsObject) optUint(n string, v uint64) {
	if v != 0 {
		o.uint(n, v)
	}
}

func (o *jcsObject) raw(n string, v []byte) {
	o.name(n)
	o.b = append(o.b, v...)
}

func (o *jcsObject) close() []byte { return append(o.b, '}') }

func appendRequestJCS(dst []byte, r *ECouponRequest) []byte {
	o := openObject(dst)
	o.str("amount", strconv.FormatUint(uint64(r.Price), 10))
	o.str("currency", strings.ToLower(r.Currency))
	o.optStr("description", r.Description)
	o.name("methodDetails")
	d := openObject(o.b)
	d.optStr("broker", r.Broker)
	d.optUint("lease", uint64(r.Lease))
	d.optStr("meter", r.Meter)
	d.str("nonce", r.Nonce)
	d.optStr("store", r.Store)
	d.str("unit", r.Unit)
	d.optUint("window", uint64(r.Window))
	o.b = d.close()
	o.str("recipient", r.Vendor)
	return o.close()
}

func appendPayloadJCS(dst []byte, p *ECouponPayload) []byte {
	o := openObject(dst)
	o.optStr("binding", p.Binding)
	o.uint("index", uint64(p.Index))
	o.str("lane", p.Lane)
	o.optStr("open", p.Open)
	o.str("value", p.Value)
	return o.close()
}

func appendChallengeJCS(dst []byte, c *Challenge) []byte {
	o := openObject(dst)
	o.optStr("description", c.Description)
	o.optStr("digest", c.Digest)
	o.optStr("expires", c.Expires)
	o.optStr("header", c.Header)
	o.str("id", c.ID)
	o.str("intent", c.Intent)
	o.str("method", c.Method)
	o.optStr("opaque", c.Opaque)
	o.str("realm", c.Realm)
	o.str("request", c.Request)
	return o.close()
}

// appendCredentialJCS emits cr with its payload, which must be in JCS
// form already.
func appendCredentialJCS(dst []byte, cr *Credential, payload []byte) []byte {
	o := openObject(dst)
	o.name("challenge")
	o.b = appendChallengeJCS(o.b, &cr.Challenge)
	o.raw("payload", payload)
	o.optStr("source", cr.Source)
	return o.close()
}

func appendReceiptJCS(dst []byte, r *Receipt) []byte {
	o := openObject(dst)
	o.optUint("index", uint64(r.Index))
	o.optStr("lane", r.Lane)
	o.str("method", r.Method)
	o.str("reference", r.Reference)
	o.str("status", r.Status)
	o.str("timestamp", r.Timestamp)
	return o.close()
}

func appendProblemJCS(dst []byte, p *Problem) []byte {
	o := openObject(dst)
	o.optStr("challengeId", p.ChallengeID)
	o.optStr("code", p.Code)
	o.optStr("detail", p.Detail)
	o.optStr("hint", p.Hint)
	o.optUint("resume", uint64(p.Resume))
	o.name("status")
	o.b = strconv.AppendInt(o.b, int64(p.Status), 10)
	o.str("title", p.Title)
	o.str("type", p.Type)
	return o.close()
}
