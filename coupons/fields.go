package coupons

import (
	"fmt"
	"strconv"

	"github.com/ecoupons/ecoupons/spki"
)

// fields reads the (name value …) fields of an S-expression in order,
// remembering the first error so parsers read like the format they parse.
type fields struct {
	list spki.List
	err  error
}

// next returns the next field, which must be named name and have n
// elements (name included).
func (f *fields) next(name string, n int) spki.List {
	if f.err != nil {
		return nil
	}
	if len(f.list) == 0 {
		f.err = fmt.Errorf("%w: missing (%s …)", ErrBadBook, name)
		return nil
	}
	l, ok := f.list[0].(spki.List)
	f.list = f.list[1:]
	if !ok || !l.Is(name) || len(l) != n {
		f.err = fmt.Errorf("%w: expected (%s …) with %d elements", ErrBadBook, name, n-1)
		return nil
	}
	return l
}

func plain(x spki.Sexp) (string, bool) {
	a, ok := x.(*spki.Atom)
	if !ok || a.Hint != nil {
		return "", false
	}
	return string(a.Value), true
}

func (f *fields) str(name string) string {
	l := f.next(name, 2)
	if l == nil {
		return ""
	}
	s, ok := plain(l[1])
	if !ok {
		f.err = fmt.Errorf("%w: (%s …) must hold an octet string", ErrBadBook, name)
	}
	return s
}

func (f *fields) bytes(name string, size int) []byte {
	s := f.str(name)
	if f.err == nil && len(s) != size {
		f.err = fmt.Errorf("%w: (%s …) must be %d bytes, got %d", ErrBadBook, name, size, len(s))
		return nil
	}
	return []byte(s)
}

func (f *fields) uint32(name string) uint32 {
	s := f.str(name)
	if f.err != nil {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != s {
		f.err = fmt.Errorf("%w: (%s %q) is not a canonical decimal", ErrBadBook, name, s)
	}
	return uint32(n)
}

func (f *fields) hash(name string) spki.KeyHash {
	l := f.next(name, 2)
	if l == nil {
		return spki.KeyHash{}
	}
	h, err := spki.ParseHash(l[1])
	if err != nil {
		f.err = fmt.Errorf("%w: (%s …): %w", ErrBadBook, name, err)
	}
	return h
}
