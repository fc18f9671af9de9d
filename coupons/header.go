package coupons

import (
	"errors"
	"fmt"
	"strconv"
)

// Scheme is the HTTP authentication scheme name of ecoupons payments.
const Scheme = "ECoupon"

// MaxHeaderLen bounds an Authorization header value we parse.
const MaxHeaderLen = 512

// ErrBadHeader is a malformed payment header.
var ErrBadHeader = errors.New("coupons: malformed payment header")

// LaneID names a lane on the wire: the book's ID and the lane index.
type LaneID struct {
	Book [32]byte
	Lane uint32
}

// String returns the lane's wire form, base64url(book ID) "." decimal lane.
func (id LaneID) String() string {
	return string(AppendLaneID(nil, id))
}

// AppendLaneID appends the wire form of id to dst.
func AppendLaneID(dst []byte, id LaneID) []byte {
	dst = appendB64(dst, id.Book[:])
	dst = append(dst, '.')
	return strconv.AppendUint(dst, uint64(id.Lane), 10)
}

// ParseLaneID parses base64url(book ID) "." lane.
func ParseLaneID(s string) (LaneID, error) {
	var id LaneID
	if len(s) < 45 || s[43] != '.' {
		return id, fmt.Errorf("%w: lane %q is not <book id>.<lane>", ErrBadHeader, clip(s))
	}
	if !decodeB64(id.Book[:], s[:43]) {
		return id, fmt.Errorf("%w: lane %q: book id is not 32 bytes of base64url", ErrBadHeader, clip(s))
	}
	n, ok := parseUint32(s[44:])
	if !ok {
		return id, fmt.Errorf("%w: lane %q: lane index is not a decimal", ErrBadHeader, clip(s))
	}
	id.Lane = n
	return id, nil
}

// Payment is a decoded payment header:
//
//	Authorization: ECoupon lane=<book id>.<lane>, i=<index>, w=<value>, m=<binding>
//
// with base64url (unpadded) w (32 bytes) and m (16 bytes). m binds this
// request to the lane's next chain value (package tesla's BindRequest); it
// is absent only on a lane's last coupon, which has no next value.
type Payment struct {
	Lane   LaneID
	Index  uint32
	Value  Value
	MAC    [16]byte
	HasMAC bool
}

// AppendHeader appends the Authorization header value for p.
func (p *Payment) AppendHeader(dst []byte) []byte {
	dst = append(dst, Scheme...)
	dst = append(dst, " lane="...)
	dst = AppendLaneID(dst, p.Lane)
	dst = append(dst, ", i="...)
	dst = strconv.AppendUint(dst, uint64(p.Index), 10)
	dst = append(dst, ", w="...)
	dst = appendB64(dst, p.Value[:])
	if p.HasMAC {
		dst = append(dst, ", m="...)
		dst = appendB64(dst, p.MAC[:])
	}
	return dst
}

// Header returns the Authorization header value for p.
func (p *Payment) Header() string { return string(p.AppendHeader(make([]byte, 0, 160))) }

// ParsePayment parses an Authorization header value into p. The scheme is
// matched case-insensitively (RFC 9110 §11.1); parameters are
// name=value pairs separated by commas with optional whitespace, values
// bare or quoted; unknown parameters are ignored, duplicated ones refused.
// It does not allocate on success.
func ParsePayment(h string, p *Payment) error {
	if len(h) > MaxHeaderLen {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrBadHeader, len(h), MaxHeaderLen)
	}
	if len(h) < len(Scheme)+1 || !equalFold(h[:len(Scheme)], Scheme) || h[len(Scheme)] != ' ' {
		return fmt.Errorf("%w: scheme is not %s", ErrBadHeader, Scheme)
	}
	if parseCanonical(h, p) {
		return nil
	}
	return parseParams(h, p)
}

// parseParams is ParsePayment's general parser, for any order, spacing,
// quoting and extra parameters.
func parseParams(h string, p *Payment) error {
	*p = Payment{}
	var seen uint8
	rest := h[len(Scheme)+1:]
	for {
		rest = trimOWS(rest)
		if rest == "" {
			break
		}
		name, value, tail, err := nextParam(rest)
		if err != nil {
			return err
		}
		rest = tail
		var bit uint8
		switch name {
		case "lane":
			bit = 1
			id, err := ParseLaneID(value)
			if err != nil {
				return err
			}
			p.Lane = id
		case "i":
			bit = 2
			n, ok := parseUint32(value)
			if !ok || n == 0 {
				return fmt.Errorf("%w: i=%q is not a coupon index (1, 2, …)", ErrBadHeader, clip(value))
			}
			p.Index = n
		case "w":
			bit = 4
			if len(value) != 43 || !decodeB64(p.Value[:], value) {
				return fmt.Errorf("%w: w must be 32 bytes of unpadded base64url", ErrBadHeader)
			}
		case "m":
			bit = 8
			if len(value) != 22 || !decodeB64(p.MAC[:], value) {
				return fmt.Errorf("%w: m must be 16 bytes of unpadded base64url", ErrBadHeader)
			}
			p.HasMAC = true
		default:
			continue
		}
		if seen&bit != 0 {
			return fmt.Errorf("%w: parameter %s given twice", ErrBadHeader, name)
		}
		seen |= bit
	}
	if seen&7 != 7 {
		return fmt.Errorf("%w: lane, i and w are required", ErrBadHeader)
	}
	return nil
}

// parseCanonical parses the header as AppendHeader writes it (the form
// every wallet sends): "ECoupon lane=…, i=…, w=…[, m=…]", nothing else. It
// reports false for anything else, which ParsePayment then parses in
// general (and refuses with the reason when it must); what it parses, the
// general parser parses the same.
func parseCanonical(h string, p *Payment) bool {
	const pre = Scheme + " lane="
	if len(h) < len(pre) || h[:len(pre)] != pre {
		return false
	}
	s := h[len(pre):]
	// lane=<43 base64url>.<decimal>
	if len(s) < 45 || s[43] != '.' {
		return false
	}
	var q Payment
	if !decodeB64(q.Lane.Book[:], s[:43]) {
		return false
	}
	n, s, ok := canonicalUint(s[44:], ", i=")
	if !ok {
		return false
	}
	q.Lane.Lane = n
	if q.Index, s, ok = canonicalUint(s, ", w="); !ok || q.Index == 0 {
		return false
	}
	if len(s) < 43 || !decodeB64(q.Value[:], s[:43]) {
		return false
	}
	switch s = s[43:]; {
	case s == "":
	case len(s) == 4+22 && s[:4] == ", m=" && decodeB64(q.MAC[:], s[4:]):
		q.HasMAC = true
	default:
		return false
	}
	*p = q
	return true
}

// canonicalUint parses a decimal followed by sep, returning what follows.
func canonicalUint(s, sep string) (uint32, string, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, ok := parseUint32(s[:i])
	if !ok || len(s)-i < len(sep) || s[i:i+len(sep)] != sep {
		return 0, "", false
	}
	return n, s[i+len(sep):], true
}

// nextParam splits `name=value[,…]`.
func nextParam(s string) (name, value, rest string, err error) {
	i := 0
	for i < len(s) && isTchar(s[i]) {
		i++
	}
	if i == 0 || i >= len(s) || s[i] != '=' {
		return "", "", "", fmt.Errorf("%w: expected name=value at %q", ErrBadHeader, clip(s))
	}
	name = lowerASCII(s[:i])
	s = s[i+1:]
	if s != "" && s[0] == '"' {
		j := 1
		for j < len(s) && s[j] != '"' {
			if s[j] == '\\' || s[j] < 0x20 || s[j] == 0x7f {
				return "", "", "", fmt.Errorf("%w: escapes and control bytes are not allowed in %s", ErrBadHeader, name)
			}
			j++
		}
		if j >= len(s) {
			return "", "", "", fmt.Errorf("%w: unterminated quoted value for %s", ErrBadHeader, name)
		}
		value, s = s[1:j], s[j+1:]
	} else {
		j := 0
		for j < len(s) && s[j] != ',' && s[j] != ' ' && s[j] != '\t' {
			if s[j] < 0x21 || s[j] > 0x7e || s[j] == '"' {
				return "", "", "", fmt.Errorf("%w: byte %#02x in the value of %s", ErrBadHeader, s[j], name)
			}
			j++
		}
		value, s = s[:j], s[j:]
	}
	s = trimOWS(s)
	if s != "" {
		if s[0] != ',' {
			return "", "", "", fmt.Errorf("%w: expected ',' after %s", ErrBadHeader, name)
		}
		s = s[1:]
	}
	return name, value, s, nil
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// lowerASCII lower-cases s without allocating when it is already lower
// case (the names we know are).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			b := []byte(s)
			for j := range b {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

func parseUint32(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	if n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// clip shortens attacker-supplied text quoted in errors.
func clip(s string) string {
	if len(s) > 48 {
		return s[:48] + "…"
	}
	return s
}

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func appendB64(dst, src []byte) []byte {
	for len(src) >= 3 {
		v := uint(src[0])<<16 | uint(src[1])<<8 | uint(src[2])
		dst = append(dst, b64url[v>>18&63], b64url[v>>12&63], b64url[v>>6&63], b64url[v&63])
		src = src[3:]
	}
	switch len(src) {
	case 1:
		v := uint(src[0]) << 16
		dst = append(dst, b64url[v>>18&63], b64url[v>>12&63])
	case 2:
		v := uint(src[0])<<16 | uint(src[1])<<8
		dst = append(dst, b64url[v>>18&63], b64url[v>>12&63], b64url[v>>6&63])
	}
	return dst
}

var b64dec = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(b64url); i++ {
		t[b64url[i]] = byte(i)
	}
	return
}()

// decodeB64 decodes unpadded base64url s into exactly len(dst) bytes,
// refusing non-canonical trailing bits. It does not allocate: eight
// characters at a time into six bytes (then four into three, then the
// tail), a character outside the alphabet found once at the end.
func decodeB64(dst []byte, s string) bool {
	if len(s) != (len(dst)*8+5)/6 {
		return false
	}
	var bad byte // 0xff (b64dec of a byte outside the alphabet) sets 0xc0
	for len(s) >= 8 && len(dst) >= 6 {
		_, _ = s[7], dst[5]
		a, b, c, d := b64dec[s[0]], b64dec[s[1]], b64dec[s[2]], b64dec[s[3]]
		e, f, g, h := b64dec[s[4]], b64dec[s[5]], b64dec[s[6]], b64dec[s[7]]
		bad |= a | b | c | d | e | f | g | h
		v := uint64(a)<<42 | uint64(b)<<36 | uint64(c)<<30 | uint64(d)<<24 | uint64(e)<<18 | uint64(f)<<12 | uint64(g)<<6 | uint64(h)
		dst[0], dst[1], dst[2], dst[3], dst[4], dst[5] = byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		dst, s = dst[6:], s[8:]
	}
	for len(s) >= 4 && len(dst) >= 3 {
		_, _ = s[3], dst[2]
		a, b, c, d := b64dec[s[0]], b64dec[s[1]], b64dec[s[2]], b64dec[s[3]]
		bad |= a | b | c | d
		v := uint(a)<<18 | uint(b)<<12 | uint(c)<<6 | uint(d)
		dst[0], dst[1], dst[2] = byte(v>>16), byte(v>>8), byte(v)
		dst, s = dst[3:], s[4:]
	}
	switch {
	case len(s) == 0:
	case len(s) == 2 && len(dst) == 1: // one byte, 4 zero bits
		a, b := b64dec[s[0]], b64dec[s[1]]
		bad |= a | b
		if b&0x0f != 0 {
			return false
		}
		dst[0] = a<<2 | b>>4
	case len(s) == 3 && len(dst) == 2: // two bytes, 2 zero bits
		a, b, c := b64dec[s[0]], b64dec[s[1]], b64dec[s[2]]
		bad |= a | b | c
		if c&0x03 != 0 {
			return false
		}
		v := uint(a)<<12 | uint(b)<<6 | uint(c)
		dst[0], dst[1] = byte(v>>10), byte(v>>2)
	default:
		return false
	}
	return bad&0xc0 == 0
}
