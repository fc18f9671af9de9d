package coupons

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
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

var digestPool = sync.Pool{New: func() any { return sha256.New() }}

// Digest returns the request digest
//
//	SHA-256(LabelRequest || lp(method) || lp(host) || lp(path) || lp(query)
//	        || book id || be32(lane) || be32(index) || lp(nonce))
//
// where lp(x) = be32(len(x)) || x. The host is as the client sent it
// (lower-cased by the caller); path and query are the raw, still escaped,
// request-target parts. It does not allocate in steady state.
func (r *Request) Digest() [32]byte {
	h := digestPool.Get().(hash.Hash)
	h.Reset()
	var buf [64]byte
	b := append(buf[:0], LabelRequest...)
	h.Write(b)
	for _, s := range [...]string{r.Method, r.Host, r.Path, r.Query} {
		writeLP(h, s)
	}
	b = append(buf[:0], r.Lane.Book[:]...)
	b = binary.BigEndian.AppendUint32(b, r.Lane.Lane)
	b = binary.BigEndian.AppendUint32(b, r.Index)
	h.Write(b)
	writeLP(h, r.Nonce)
	var out [32]byte
	h.Sum(out[:0])
	digestPool.Put(h)
	return out
}

func writeLP(h hash.Hash, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	h.Write(n[:])
	if sw, ok := h.(interface{ WriteString(string) (int, error) }); ok {
		sw.WriteString(s)
	} else {
		h.Write([]byte(s))
	}
}
