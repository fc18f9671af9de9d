package coupons

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
)

// LabelRequest prefixes the request digest. Version 2 added the request's
// content digest and Range header; a version 1 digest (without them) is not
// accepted any more.
const LabelRequest = "ecoupons request v2"

// HeaderContentDigest is the RFC 9530 header by which a client states the
// SHA-256 of a paid request's content (its body).
const HeaderContentDigest = "Content-Digest"

// Errors about the Content-Digest header.
var (
	// ErrBadContentDigest is a Content-Digest value that does not parse or
	// holds no sha-256 member.
	ErrBadContentDigest = errors.New("coupons: malformed Content-Digest (want sha-256=:<base64>:)")
)

// Request is what a paid HTTP request is bound to: the parts of the request
// that select the resource, the coupon that pays for it and the challenge
// nonce it answers.
type Request struct {
	Method, Host, Path, Query string
	// ContentDigest is the SHA-256 of the request's content (32 bytes), or
	// nil for a request without content (no body, or an empty one).
	ContentDigest []byte
	// Range is the request's Range header, its field lines joined with
	// ", " ("" without one).
	Range string
	Lane  LaneID
	Index uint32
	Nonce string
}

// Digest returns the request digest
//
//	SHA-256(LabelRequest || lp(method) || lp(host) || lp(path) || lp(query)
//	        || lp(content digest) || lp(range)
//	        || book id || be32(lane) || be32(index) || lp(nonce))
//
// where lp(x) = be32(len(x)) || x. The host is as the client sent it
// (lower-cased by the caller); path and query are the raw, still escaped,
// request-target parts; the content digest is the 32 bytes of SHA-256 of
// the body, empty when the body is. It does not allocate for requests up
// to 256 bytes (a typical GET is about 200), which it builds on the stack.
func (r *Request) Digest() [32]byte {
	var buf [256]byte
	b := buf[:0]
	n := len(LabelRequest) + 7*4 + len(r.Method) + len(r.Host) + len(r.Path) + len(r.Query) + len(r.ContentDigest) +
		len(r.Range) + len(r.Lane.Book) + 8 + len(r.Nonce)
	if n > len(buf) {
		b = make([]byte, 0, n)
	}
	b = append(b, LabelRequest...)
	b = appendLP(b, r.Method)
	b = appendLP(b, r.Host)
	b = appendLP(b, r.Path)
	b = appendLP(b, r.Query)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.ContentDigest)))
	b = append(b, r.ContentDigest...)
	b = appendLP(b, r.Range)
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

// ContentDigestHeader returns the Content-Digest value stating that a
// request's content has SHA-256 sum: "sha-256=:<base64>:".
func ContentDigestHeader(sum *[32]byte) string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// ParseContentDigest returns the sha-256 member of a Content-Digest value
// (an RFC 8941 dictionary; members of other algorithms are ignored). It
// returns ErrBadContentDigest when the value does not parse, holds no
// sha-256 member, or holds it twice. It does not allocate.
func ParseContentDigest(v string) ([32]byte, error) {
	var sum [32]byte
	found := false
	for rest, more := v, true; more; {
		var m string
		m, rest, more = strings.Cut(rest, ",")
		m = strings.Trim(m, " \t")
		key, val, ok := strings.Cut(m, "=")
		if !ok || key == "" {
			return sum, ErrBadContentDigest
		}
		if key != "sha-256" {
			continue
		}
		// 32 bytes are 44 base64 characters, padded.
		if found || len(val) != 46 || val[0] != ':' || val[45] != ':' {
			return sum, ErrBadContentDigest
		}
		var src [44]byte
		copy(src[:], val[1:45])
		if n, err := base64.StdEncoding.Strict().Decode(sum[:], src[:]); err != nil || n != len(sum) {
			return [32]byte{}, ErrBadContentDigest
		}
		found = true
	}
	if !found {
		return sum, ErrBadContentDigest
	}
	return sum, nil
}
