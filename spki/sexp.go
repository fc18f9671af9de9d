// Package spki implements SPKI S-expressions (RFC 9804), SPKI public keys,
// certificates, tags and 5-tuple reduction (RFC 2693 and the SPKI
// certificate structure draft, draft-ietf-spki-cert-structure-06).
//
// The canonical form of an S-expression is what ecoupons hashes and signs.
// Every object is parsed from any of the three representations (canonical,
// advanced, transport) and emitted in any of them. Parsers are bounded by
// [Limits] and return a [*SyntaxError] naming the byte offset of the first
// problem; they never panic.
package spki

import (
	"bytes"
	"strconv"
)

// Sexp is an S-expression: either an [*Atom] or a [List].
type Sexp interface {
	// appendCanonical appends the canonical encoding (RFC 9804 §4.1).
	appendCanonical(dst []byte) []byte
	isSexp()
}

// Atom is an octet string with an optional display hint (RFC 9804 §3).
// A nil Hint means the atom has no display hint; an empty non-nil Hint is
// the (legal) empty display hint "[0:]".
type Atom struct {
	Hint  []byte
	Value []byte
}

// List is a parenthesized sequence of S-expressions. The empty list is
// legal S-expression syntax, though no SPKI object uses it.
type List []Sexp

func (*Atom) isSexp() {}
func (List) isSexp()  {}

// NewAtom returns an atom without display hint holding s.
func NewAtom(s string) *Atom { return &Atom{Value: []byte(s)} }

// NewBytes returns an atom without display hint holding b (not copied).
func NewBytes(b []byte) *Atom { return &Atom{Value: b} }

// L builds a list. Strings become atoms, []byte become atoms, Sexp values are
// taken as they are; any other type panics, since L is meant for literal
// construction in code, never for untrusted input.
func L(items ...any) List {
	l := make(List, 0, len(items))
	for _, it := range items {
		switch v := it.(type) {
		case string:
			l = append(l, NewAtom(v))
		case []byte:
			l = append(l, NewBytes(v))
		case Sexp:
			l = append(l, v)
		default:
			panic("spki.L: unsupported element type")
		}
	}
	return l
}

func appendSimple(dst, s []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

func (a *Atom) appendCanonical(dst []byte) []byte {
	if a.Hint != nil {
		dst = append(dst, '[')
		dst = appendSimple(dst, a.Hint)
		dst = append(dst, ']')
	}
	return appendSimple(dst, a.Value)
}

func (l List) appendCanonical(dst []byte) []byte {
	dst = append(dst, '(')
	for _, e := range l {
		dst = e.appendCanonical(dst)
	}
	return append(dst, ')')
}

// Canonical returns the canonical encoding of s (RFC 9804 §4.1): the unique
// byte string that ecoupons hashes and signs.
func Canonical(s Sexp) []byte { return s.appendCanonical(nil) }

// AppendCanonical appends the canonical encoding of s to dst.
func AppendCanonical(dst []byte, s Sexp) []byte { return s.appendCanonical(dst) }

// Equal reports whether a and b are the same S-expression (same canonical
// encoding). Nil values are equal only to each other.
func Equal(a, b Sexp) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	switch x := a.(type) {
	case *Atom:
		y, ok := b.(*Atom)
		return ok && (x.Hint == nil) == (y.Hint == nil) && bytes.Equal(x.Hint, y.Hint) && bytes.Equal(x.Value, y.Value)
	case List:
		y, ok := b.(List)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// String returns the advanced (human-readable) form of the atom.
func (a *Atom) String() string { return string(Advanced(a)) }

// String returns the advanced (human-readable) form of the list.
func (l List) String() string { return string(Advanced(l)) }

// Head returns the first element of l when it is an atom without display
// hint, which by SPKI convention names the list's type ("cert", "tag", …).
func (l List) Head() (string, bool) {
	if len(l) == 0 {
		return "", false
	}
	a, ok := l[0].(*Atom)
	if !ok || a.Hint != nil {
		return "", false
	}
	return string(a.Value), true
}

// Is reports whether l is a list whose type name is name.
func (l List) Is(name string) bool {
	h, ok := l.Head()
	return ok && h == name
}
