package coupons

import (
	"crypto/sha256"
	"encoding/binary"
)

// LabelRequest prefixes the request digest.
const LabelRequest = "ecoupons request v1"

// Request is what a paid HTTP request is bound to: the parts of the request
// that select the resource, the coupon that pays for it and the challenge
// nonce it answers.
type Request struct {
	Method, Host, Path, Query string
	Lane                      LaneID
	Index                     uint32
	Nonce                     string
}

// Digest returns the request digest
//
//	SHA-256(LabelRequest || lp(method) || lp(host) || lp(path) || lp(query)
//	        || book id || be32(lane) || be32(index) || lp(nonce))
//
// where lp(x) = be32(len(x)) || x. The host is as the client sent it
// (lower-cased by the caller); path and query are the raw, still escaped,
// request-target parts. It does not allocate for requests up to 1 KiB.
func (r *Request) Digest() [32]byte {
	var buf [1024]byte
	b := append(buf[:0], LabelRequest...)
	b = appendLP(b, r.Method)
	b = appendLP(b, r.Host)
	b = appendLP(b, r.Path)
	b = appendLP(b, r.Query)
	b = append(b, r.Lane.Book[:]...)
	b = binary.BigEndian.AppendUint32(b, r.Lane.Lane)
	b = binary.BigEndian.AppendUint32(b, r.Index)
	b = appendLP(b, r.Nonce)
	return sha256.Sum256(b)
}

func appendLP(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
