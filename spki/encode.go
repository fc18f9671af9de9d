package spki

import (
	"encoding/base64"
	"strconv"
)

// Transport returns the transport representation of s (RFC 9804 §6.2):
// "{" base64(canonical) "}", safe in mail, JSON strings and HTTP headers.
func Transport(s Sexp) []byte {
	c := Canonical(s)
	out := make([]byte, 0, 2+base64.StdEncoding.EncodedLen(len(c)))
	out = append(out, '{')
	out = base64.StdEncoding.AppendEncode(out, c)
	return append(out, '}')
}

// Advanced returns the advanced (human-readable) representation of s
// (RFC 9804 §6.3) on one line. Each octet string is written as a token when
// it is one, as a quoted string when it is printable ASCII, as #hex# when it
// is short binary and as |base64| otherwise. Parsing the result gives s back.
func Advanced(s Sexp) []byte { return appendAdvanced(nil, s, -1, 0) }

// AdvancedIndent is [Advanced] with one element per line, nested lists
// indented by two spaces per level: the form shown to people in docs.
func AdvancedIndent(s Sexp) []byte { return appendAdvanced(nil, s, 0, 0) }

// appendAdvanced writes s; indent < 0 means one line.
func appendAdvanced(dst []byte, s Sexp, indent, col int) []byte {
	switch v := s.(type) {
	case *Atom:
		if v.Hint != nil {
			dst = append(dst, '[')
			dst = appendOctets(dst, v.Hint)
			dst = append(dst, ']')
		}
		return appendOctets(dst, v.Value)
	case List:
		dst = append(dst, '(')
		flat := indent < 0 || len(Canonical(v)) <= 72-col
		for i, e := range v {
			if i > 0 {
				if flat {
					dst = append(dst, ' ')
				} else {
					dst = append(dst, '\n')
					for range col + 2 {
						dst = append(dst, ' ')
					}
				}
			}
			sub := -1
			if !flat {
				sub = 0
			}
			dst = appendAdvanced(dst, e, sub, col+2)
		}
		return append(dst, ')')
	}
	return dst
}

// isToken reports whether b can be written as a token: non-empty, made of
// token characters and not starting with a digit (RFC 9804 §4.3).
func isToken(b []byte) bool {
	if len(b) == 0 || isDigit(b[0]) {
		return false
	}
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func appendOctets(dst, b []byte) []byte {
	switch {
	case isToken(b):
		return append(dst, b...)
	case isPrintable(b):
		dst = append(dst, '"')
		for _, c := range b {
			if c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		}
		return append(dst, '"')
	case len(b) <= 4:
		const digits = "0123456789abcdef"
		dst = append(dst, '#')
		for _, c := range b {
			dst = append(dst, digits[c>>4], digits[c&15])
		}
		return append(dst, '#')
	default:
		dst = append(dst, '|')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '|')
	}
}

// Int returns an atom holding the decimal representation of n, the SPKI
// convention for numbers in tags and validity fields.
func Int(n int64) *Atom { return NewAtom(strconv.FormatInt(n, 10)) }
