package payment

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting Canonicalize follows.
const maxJSONDepth = 32

// Canonicalize returns the JSON Canonicalization Scheme (RFC 8785) form of
// the JSON text in: object members sorted by the UTF-16 code units of their
// names (§3.2.3), no whitespace, strings escaped as §3.2.2.2 says and
// numbers in ECMAScript's Number-to-String form (§3.2.2.3). Input that is
// not I-JSON (RFC 7493: invalid UTF-8, duplicate member names, numbers
// beyond IEEE 754 double) is refused with ErrBadJSON.
func Canonicalize(in []byte) ([]byte, error) {
	if !utf8.Valid(in) {
		return nil, fieldErr(ErrBadJSON, "", "invalid UTF-8")
	}
	if !surrogatesPaired(in) {
		return nil, fieldErr(ErrBadJSON, "", "an unpaired surrogate escape")
	}
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	out, err := canonValue(d, nil, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fieldErr(ErrBadJSON, "", "trailing data after the JSON value")
	}
	return out, nil
}

// surrogatesPaired reports whether every \uD800–\uDBFF escape in in is
// followed by a \uDC00–\uDFFF escape and every low one follows a high
// one: encoding/json would turn an unpaired one into U+FFFD, and I-JSON
// refuses them. A backslash only occurs inside strings in valid JSON, so
// the scan need not track them.
func surrogatesPaired(in []byte) bool {
	for i := 0; i < len(in); i++ {
		if in[i] != '\\' {
			continue
		}
		if i+1 < len(in) && in[i+1] != 'u' {
			i++ // a two-character escape, \\ included
			continue
		}
		u, ok := hex4(in, i+2)
		if !ok {
			continue // malformed: the decoder refuses it
		}
		switch {
		case 0xdc00 <= u && u <= 0xdfff:
			return false
		case 0xd800 <= u && u <= 0xdbff:
			lo, ok := hex4(in, i+8)
			if !ok || in[i+6] != '\\' || in[i+7] != 'u' || lo < 0xdc00 || lo > 0xdfff {
				return false
			}
			i += 11
		default:
			i += 5
		}
	}
	return true
}

func hex4(b []byte, i int) (uint16, bool) {
	if i < 0 || i+4 > len(b) {
		return 0, false
	}
	var u uint16
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		u = u<<4 | uint16(c)
	}
	return u, true
}

// marshalJCS marshals v with encoding/json and canonicalises the result.
func marshalJCS(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Canonicalize(b)
}

func canonValue(d *json.Decoder, dst []byte, depth int) ([]byte, error) {
	if depth > maxJSONDepth {
		return nil, fieldErr(ErrBadJSON, "", "nested deeper than %d", maxJSONDepth)
	}
	tok, err := d.Token()
	if err != nil {
		return nil, fieldErr(ErrBadJSON, "", "%v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			dst = append(dst, '[')
			for i := 0; d.More(); i++ {
				if i > 0 {
					dst = append(dst, ',')
				}
				if dst, err = canonValue(d, dst, depth+1); err != nil {
					return nil, err
				}
			}
			if _, err := d.Token(); err != nil {
				return nil, fieldErr(ErrBadJSON, "", "%v", err)
			}
			return append(dst, ']'), nil
		case '{':
			return canonObject(d, dst, depth)
		}
		return nil, fieldErr(ErrBadJSON, "", "unexpected %v", t)
	case string:
		return appendJCSString(dst, t), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(t), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fieldErr(ErrBadJSON, "", "number %s is not an IEEE 754 double", clip(string(t)))
		}
		return appendES6Number(dst, f), nil
	case bool:
		return strconv.AppendBool(dst, t), nil
	case nil:
		return append(dst, "null"...), nil
	}
	return nil, fieldErr(ErrBadJSON, "", "unexpected token")
}

func canonObject(d *json.Decoder, dst []byte, depth int) ([]byte, error) {
	type member struct {
		name  string
		value []byte
	}
	var members []member
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, fieldErr(ErrBadJSON, "", "%v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fieldErr(ErrBadJSON, "", "object member name is not a string")
		}
		v, err := canonValue(d, nil, depth+1)
		if err != nil {
			return nil, err
		}
		members = append(members, member{name, v})
	}
	if _, err := d.Token(); err != nil {
		return nil, fieldErr(ErrBadJSON, "", "%v", err)
	}
	slices.SortFunc(members, func(a, b member) int { return compareUTF16(a.name, b.name) })
	dst = append(dst, '{')
	for i, m := range members {
		if i > 0 {
			if members[i-1].name == m.name {
				return nil, fieldErr(ErrBadJSON, m.name, "duplicate member name")
			}
			dst = append(dst, ',')
		}
		dst = appendJCSString(dst, m.name)
		dst = append(dst, ':')
		dst = append(dst, m.value...)
	}
	return append(dst, '}'), nil
}

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785
// §3.2.3), which differs from UTF-8 byte order above U+FFFF: a surrogate
// (0xD800–0xDFFF) sorts before U+E000–U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return int(utf16Key(ra)) - int(utf16Key(rb))
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Key is the first UTF-16 code unit of r; runes that differ and share
// it (two astral runes with one high surrogate) compare by the second.
func utf16Key(r rune) uint32 {
	if r < 0x10000 {
		return uint32(r) << 16
	}
	hi, lo := utf16.EncodeRune(r)
	return uint32(hi)<<16 | uint32(lo)
}

// appendJCSString appends s as RFC 8785 §3.2.2.2 serialises strings: only
// '"', '\\' and controls are escaped, the latter with the short forms
// where JSON has them and \u00xx (lower-case hex) otherwise. Invalid UTF-8
// (which Canonicalize refuses, but a Go string may hold) becomes U+FFFD.
func appendJCSString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c >= 0x80:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, "\uFFFD"...) // as encoding/json does: the output stays UTF-8
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n - 1
		case c >= 0x20:
			dst = append(dst, c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		}
	}
	return append(dst, '"')
}

// appendES6Number appends f as ECMAScript's Number::toString does
// (ECMA-262 §7.1.12.1, RFC 8785 §3.2.2.3): the shortest digits that round
// trip, in plain notation for exponents from -6 to 20 and in exponent
// notation otherwise. f must be finite.
func appendES6Number(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // also -0
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // d[.ddd]e±XX
	mant, exp, _ := bytes.Cut(e, []byte{'e'})
	x, _ := strconv.Atoi(string(exp))
	var digits []byte
	digits = append(digits, mant[0])
	if len(mant) > 2 {
		digits = append(digits, mant[2:]...)
	}
	k, n := len(digits), x+1 // value = digits × 10^(n-k)
	switch {
	case k <= n && n <= 21:
		dst = append(dst, digits...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, digits[:n]...)
		dst = append(dst, '.')
		dst = append(dst, digits[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, digits...)
	default:
		dst = append(dst, digits[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}
