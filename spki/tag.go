package spki

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrBadTag is a malformed tag or a tag form ecoupons does not support.
var ErrBadTag = errors.New("spki: malformed tag")

// TagKind says which form of the tag algebra a [Tag] is.
type TagKind uint8

// The tag forms of the SPKI structure draft §6, plus And.
const (
	TagAll    TagKind = iota // (*): every S-expression
	TagAtom                  // an octet string: exactly itself
	TagList                  // (a b …): lists at least as long, element-wise
	TagSet                   // (* set t1 t2 …): the union
	TagPrefix                // (* prefix "p"): octet strings starting with p
	TagRange                 // (* range ordering ge|gt a le|lt b)
	// TagAnd is the ecoupons extension (* and t1 t2 …), the intersection of
	// byte-string constraints under different orderings (a numeric range and
	// a prefix, say), which SPKI cannot otherwise express. It appears only
	// as the result of [Intersect]; no certificate needs to carry it.
	TagAnd
)

// Orderings of (* range …).
const (
	OrderAlpha   = "alpha"   // bytewise lexicographic
	OrderNumeric = "numeric" // decimal numbers: -?digits[.digits]
	OrderTime    = "time"    // SPKI dates YYYY-MM-DD_HH:MM:SS (UTC)
	OrderBinary  = "binary"  // unsigned big-endian integers
)

// SPKIDate is the SPKI date layout (structure draft §5.3), always UTC.
const SPKIDate = "2006-01-02_15:04:05"

// Tag is an authorization tag in normal form: sets are flattened, sorted,
// without duplicates or members implied by other members; intersections of
// byte-string constraints are merged. Normal form makes [Intersect]
// commutative and idempotent, and [Implies] a comparison.
type Tag struct {
	Kind  TagKind
	Atom  *Atom  // TagAtom: the string; TagPrefix: the prefix
	Elems []*Tag // TagList, TagSet, TagAnd
	Range *Range // TagRange
}

// Range is the (* range …) form. A nil bound is unbounded.
type Range struct {
	Order        string
	Lower, Upper []byte
	LowerStrict  bool // gt rather than ge
	UpperStrict  bool // lt rather than le
}

// AllTag returns (*).
func AllTag() *Tag { return &Tag{Kind: TagAll} }

// AtomTag returns the tag matching exactly the octet string s.
func AtomTag(s string) *Tag { return &Tag{Kind: TagAtom, Atom: NewAtom(s)} }

// ListTag returns the list tag (e1 e2 …).
func ListTag(elems ...*Tag) *Tag { return &Tag{Kind: TagList, Elems: elems} }

// PrefixTag returns (* prefix p).
func PrefixTag(p string) *Tag { return &Tag{Kind: TagPrefix, Atom: NewAtom(p)} }

// RangeTag returns a (* range …) tag after checking its bounds parse under
// the ordering; the result is in normal form.
func RangeTag(r Range) (*Tag, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.empty() {
		return nil, fmt.Errorf("%w: range %s is empty", ErrBadTag, string(Advanced(r.sexp())))
	}
	return &Tag{Kind: TagRange, Range: &r}, nil
}

// SetTag returns the normal form of (* set e1 e2 …); ok is false when the
// set is empty.
func SetTag(elems ...*Tag) (*Tag, bool) {
	o := newTagOp()
	t, ok := o.normSet(elems)
	return t, ok && !o.exhausted()
}

// Sexp returns the tag body (without the enclosing (tag …)).
func (t *Tag) Sexp() Sexp {
	switch t.Kind {
	case TagAll:
		return L("*")
	case TagAtom:
		return t.Atom
	case TagList:
		l := make(List, len(t.Elems))
		for i, e := range t.Elems {
			l[i] = e.Sexp()
		}
		return l
	case TagSet, TagAnd:
		name := "set"
		if t.Kind == TagAnd {
			name = "and"
		}
		l := L("*", name)
		for _, e := range t.Elems {
			l = append(l, e.Sexp())
		}
		return l
	case TagPrefix:
		return L("*", "prefix", t.Atom)
	case TagRange:
		return t.Range.sexp()
	}
	return L("*", "invalid")
}

// String returns the tag body's advanced form.
func (t *Tag) String() string { return string(Advanced(t.Sexp())) }

func (r *Range) sexp() List {
	l := L("*", "range", r.Order)
	if r.Lower != nil {
		op := "ge"
		if r.LowerStrict {
			op = "gt"
		}
		l = append(l, NewAtom(op), NewBytes(r.Lower))
	}
	if r.Upper != nil {
		op := "le"
		if r.UpperStrict {
			op = "lt"
		}
		l = append(l, NewAtom(op), NewBytes(r.Upper))
	}
	return l
}

// Equal reports whether two normal-form tags are identical.
func (t *Tag) Equal(u *Tag) bool { return bytes.Equal(Canonical(t.Sexp()), Canonical(u.Sexp())) }

// maxTagElems bounds set sizes so that normalization (quadratic in the set
// size) stays cheap on hostile input.
const maxTagElems = 16

// ParseTag parses a tag body (what follows "tag" in (tag …)) and returns its
// normal form.
func ParseTag(s Sexp) (*Tag, error) { return parseTag(s, 0) }

func parseTag(s Sexp, depth int) (*Tag, error) {
	if depth > DefaultLimits.MaxDepth {
		return nil, fmt.Errorf("%w: nested too deep", ErrBadTag)
	}
	switch v := s.(type) {
	case *Atom:
		return &Tag{Kind: TagAtom, Atom: v}, nil
	case List:
		if len(v) == 0 {
			return nil, fmt.Errorf("%w: empty list", ErrBadTag)
		}
		if h, ok := v.Head(); ok && h == "*" {
			return parseStar(v, depth)
		}
		t := &Tag{Kind: TagList, Elems: make([]*Tag, len(v))}
		for i, e := range v {
			et, err := parseTag(e, depth+1)
			if err != nil {
				return nil, err
			}
			t.Elems[i] = et
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w: not an S-expression", ErrBadTag)
}

func parseStar(v List, depth int) (*Tag, error) {
	if len(v) == 1 {
		return AllTag(), nil
	}
	kind, ok := plainAtom(v[1])
	if !ok {
		return nil, fmt.Errorf("%w: (* …) needs a form name", ErrBadTag)
	}
	switch kind {
	case "set", "and":
		if len(v) < 3 {
			return nil, fmt.Errorf("%w: (* %s) needs at least one element", ErrBadTag, kind)
		}
		if len(v)-2 > maxTagElems {
			return nil, fmt.Errorf("%w: (* %s) has more than %d elements", ErrBadTag, kind, maxTagElems)
		}
		elems := make([]*Tag, 0, len(v)-2)
		for _, e := range v[2:] {
			et, err := parseTag(e, depth+1)
			if err != nil {
				return nil, err
			}
			elems = append(elems, et)
		}
		o := newTagOp()
		var t *Tag
		if kind == "set" {
			t, ok = o.normSet(elems)
		} else {
			t = elems[0]
			for _, e := range elems[1:] {
				if t, ok = o.intersect(t, e); !ok {
					break
				}
			}
		}
		switch {
		case o.exhausted():
			return nil, fmt.Errorf("%w: %w", ErrBadTag, ErrTagTooComplex)
		case !ok:
			return nil, fmt.Errorf("%w: (* %s …) is empty", ErrBadTag, kind)
		}
		return t, nil
	case "prefix":
		if len(v) != 3 {
			return nil, fmt.Errorf("%w: (* prefix p) takes one string", ErrBadTag)
		}
		a, ok := v[2].(*Atom)
		if !ok || a.Hint != nil {
			return nil, fmt.Errorf("%w: prefix must be an octet string without display hint", ErrBadTag)
		}
		return &Tag{Kind: TagPrefix, Atom: a}, nil
	case "range":
		return parseRange(v)
	}
	return nil, fmt.Errorf("%w: unknown form (* %s …)", ErrBadTag, kind)
}

func parseRange(v List) (*Tag, error) {
	if len(v) < 3 {
		return nil, fmt.Errorf("%w: (* range) needs an ordering", ErrBadTag)
	}
	order, _ := plainAtom(v[2])
	r := Range{Order: order}
	rest := v[3:]
	for len(rest) > 0 {
		op, ok := plainAtom(rest[0])
		if !ok || len(rest) < 2 {
			return nil, fmt.Errorf("%w: range bound must be ge|gt|le|lt followed by a value", ErrBadTag)
		}
		val, ok := rest[1].(*Atom)
		if !ok || val.Hint != nil {
			return nil, fmt.Errorf("%w: range bound must be an octet string without display hint", ErrBadTag)
		}
		switch {
		case (op == "ge" || op == "gt") && r.Lower == nil && r.Upper == nil:
			r.Lower, r.LowerStrict = val.Value, op == "gt"
		case (op == "le" || op == "lt") && r.Upper == nil:
			r.Upper, r.UpperStrict = val.Value, op == "lt"
		default:
			return nil, fmt.Errorf("%w: range bound %q out of place (lower bound first, each once)", ErrBadTag, op)
		}
		rest = rest[2:]
	}
	return RangeTag(r)
}

func (r *Range) check() error {
	switch r.Order {
	case OrderAlpha, OrderNumeric, OrderTime, OrderBinary:
	default:
		return fmt.Errorf("%w: unknown range ordering %q", ErrBadTag, r.Order)
	}
	for _, b := range [][]byte{r.Lower, r.Upper} {
		if b != nil && !validInOrder(r.Order, b) {
			return fmt.Errorf("%w: %q is not a valid %s value", ErrBadTag, b, r.Order)
		}
	}
	return nil
}

// validInOrder reports whether b is a value of the ordering.
func validInOrder(order string, b []byte) bool {
	switch order {
	case OrderNumeric:
		_, ok := parseNumeric(b)
		return ok
	case OrderTime:
		_, err := parseSPKIDate(b)
		return err == nil
	}
	return true
}

// numeric is a decimal split into its parts: -?(0|[1-9][0-9]*)(\.[0-9]+)?
type numeric struct {
	neg         bool
	whole, frac []byte // frac without trailing zeros
}

// parseNumeric accepts -?(0|[1-9][0-9]*)(\.[0-9]+)? of at most 64 bytes.
func parseNumeric(b []byte) (numeric, bool) {
	var n numeric
	if len(b) > 64 {
		return n, false
	}
	s := b
	if len(s) > 0 && s[0] == '-' {
		n.neg, s = true, s[1:]
	}
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == 0 || (s[0] == '0' && i > 1) {
		return n, false
	}
	n.whole = s[:i]
	if i < len(s) {
		if s[i] != '.' || i+1 == len(s) {
			return n, false
		}
		for _, c := range s[i+1:] {
			if !isDigit(c) {
				return n, false
			}
		}
		n.frac = bytes.TrimRight(s[i+1:], "0")
	}
	if n.neg && len(n.frac) == 0 && len(n.whole) == 1 && n.whole[0] == '0' {
		n.neg = false // -0 is 0
	}
	return n, true
}

// cmpNumeric compares two decimals exactly, without allocating.
func cmpNumeric(x, y numeric) int {
	if x.neg != y.neg {
		if x.neg {
			return -1
		}
		return 1
	}
	c := 0
	switch {
	case len(x.whole) != len(y.whole):
		c = 1
		if len(x.whole) < len(y.whole) {
			c = -1
		}
	default:
		if c = bytes.Compare(x.whole, y.whole); c == 0 {
			c = bytes.Compare(x.frac, y.frac) // no trailing zeros: lexicographic is numeric
		}
	}
	if x.neg {
		return -c
	}
	return c
}

func parseSPKIDate(b []byte) (time.Time, error) {
	if len(b) != len(SPKIDate) {
		return time.Time{}, fmt.Errorf("%w: date %q is not YYYY-MM-DD_HH:MM:SS", ErrBadTag, b)
	}
	t, err := time.Parse(SPKIDate, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: date %q: %v", ErrBadTag, b, err)
	}
	return t, nil
}

// compareIn compares two valid values of an ordering.
func compareIn(order string, a, b []byte) int {
	switch order {
	case OrderNumeric:
		x, _ := parseNumeric(a)
		y, _ := parseNumeric(b)
		return cmpNumeric(x, y)
	case OrderTime:
		x, _ := parseSPKIDate(a)
		y, _ := parseSPKIDate(b)
		return x.Compare(y)
	case OrderBinary:
		x, y := bytes.TrimLeft(a, "\x00"), bytes.TrimLeft(b, "\x00")
		if len(x) != len(y) {
			if len(x) < len(y) {
				return -1
			}
			return 1
		}
		return bytes.Compare(x, y)
	}
	return bytes.Compare(a, b)
}

func (r *Range) contains(b []byte) bool {
	if !validInOrder(r.Order, b) {
		return false
	}
	if r.Lower != nil {
		c := compareIn(r.Order, b, r.Lower)
		if c < 0 || (c == 0 && r.LowerStrict) {
			return false
		}
	}
	if r.Upper != nil {
		c := compareIn(r.Order, b, r.Upper)
		if c > 0 || (c == 0 && r.UpperStrict) {
			return false
		}
	}
	return true
}

// empty reports whether the bounds exclude every value (for dense
// orderings; a discrete gap such as gt 1 lt 2 in integers is not detected,
// which is harmless: such a range contains nothing either way).
func (r *Range) empty() bool {
	if r.Lower == nil || r.Upper == nil {
		return false
	}
	c := compareIn(r.Order, r.Lower, r.Upper)
	return c > 0 || (c == 0 && (r.LowerStrict || r.UpperStrict))
}

// Contains reports whether the tag grants the concrete S-expression x (an
// S-expression without (* …) forms, such as a request).
func (t *Tag) Contains(x Sexp) bool {
	switch t.Kind {
	case TagAll:
		return true
	case TagAtom:
		return Equal(t.Atom, x)
	case TagList:
		l, ok := x.(List)
		if !ok || len(l) < len(t.Elems) {
			return false
		}
		for i, e := range t.Elems {
			if !e.Contains(l[i]) {
				return false
			}
		}
		return true
	case TagSet:
		for _, e := range t.Elems {
			if e.Contains(x) {
				return true
			}
		}
		return false
	case TagAnd:
		for _, e := range t.Elems {
			if !e.Contains(x) {
				return false
			}
		}
		return true
	case TagPrefix:
		a, ok := x.(*Atom)
		return ok && bytes.HasPrefix(a.Value, t.Atom.Value)
	case TagRange:
		a, ok := x.(*Atom)
		return ok && t.Range.contains(a.Value)
	}
	return false
}

// Implies reports whether everything a grants, b grants too (a is at most
// as general as b): the test for "the request is covered by the grant" and
// "a sub-grant is no wider than its parent". It is exact for the forms
// certificates carry and conservative (false) in the rare cases where two
// different normal forms denote the same set, or where the work bound for
// hostile tags is exceeded.
func Implies(a, b *Tag) bool {
	o := newTagOp()
	return o.implies(a, b) && !o.exhausted()
}

// Intersect returns AIntersect(a, b) (RFC 2693 §6.3): the tag that grants
// exactly what both grant, in normal form. ok is false when nothing is
// granted by both, and also (conservatively) when the tags are so complex
// that the work bound is exceeded; [IntersectChecked] tells the two apart.
func Intersect(a, b *Tag) (*Tag, bool) {
	t, ok, err := IntersectChecked(a, b)
	return t, ok && err == nil
}

// IntersectChecked is [Intersect] reporting ErrTagTooComplex when the
// intersection of hostile tags (deeply nested sets) exceeds the work bound.
func IntersectChecked(a, b *Tag) (*Tag, bool, error) {
	o := newTagOp()
	t, ok := o.intersect(a, b)
	if o.exhausted() {
		return nil, false, ErrTagTooComplex
	}
	return t, ok, nil
}

// ErrTagTooComplex means tag algebra on the given tags exceeded the work
// bound; a verifier treats it as "not granted".
var ErrTagTooComplex = errors.New("spki: tags too complex to intersect")

// tagWorkBound caps the intersect steps of one operation. Certificates
// carry small tags (tens of steps); nested sets can make the algebra
// exponential, so hostile input is cut off here.
const tagWorkBound = 20000

// tagOp carries the work budget through one algebra operation.
type tagOp struct{ steps int }

func newTagOp() *tagOp { return &tagOp{steps: tagWorkBound} }

func (o *tagOp) exhausted() bool { return o.steps < 0 }

func (o *tagOp) implies(a, b *Tag) bool {
	c, ok := o.intersect(a, b)
	return ok && c.Equal(a)
}

func (o *tagOp) intersect(a, b *Tag) (*Tag, bool) {
	o.steps--
	if o.steps < 0 {
		return nil, false
	}
	switch {
	case a.Kind == TagAll:
		return b, true
	case b.Kind == TagAll:
		return a, true
	case a.Kind == TagSet || b.Kind == TagSet:
		as, bs := setOnly(a).Elems, setOnly(b).Elems
		out := make([]*Tag, 0, len(as)*len(bs))
		for _, x := range as {
			for _, y := range bs {
				if z, ok := o.intersect(x, y); ok {
					out = append(out, z)
				}
				if o.exhausted() {
					return nil, false
				}
			}
		}
		return o.normSet(out)
	case a.Kind == TagAtom:
		return a, b.Contains(a.Atom)
	case b.Kind == TagAtom:
		return b, a.Contains(b.Atom)
	case a.Kind == TagList && b.Kind == TagList:
		short, long := a, b
		if len(short.Elems) > len(long.Elems) {
			short, long = long, short
		}
		out := &Tag{Kind: TagList, Elems: make([]*Tag, len(long.Elems))}
		for i := range short.Elems {
			z, ok := o.intersect(short.Elems[i], long.Elems[i])
			if !ok {
				return nil, false
			}
			out.Elems[i] = z
		}
		copy(out.Elems[len(short.Elems):], long.Elems[len(short.Elems):])
		return out, true
	case a.Kind == TagList || b.Kind == TagList:
		return nil, false // a list never matches an octet-string constraint
	}
	// Both are octet-string constraints: prefix, range or and.
	return o.normAnd(append(members(a), members(b)...))
}

func members(t *Tag) []*Tag {
	if t.Kind == TagSet || t.Kind == TagAnd {
		return t.Elems
	}
	return []*Tag{t}
}

// normSet builds a set in normal form from its members.
func (o *tagOp) normSet(elems []*Tag) (*Tag, bool) {
	var flat []*Tag
	for _, e := range elems {
		if e.Kind == TagAll {
			return e, true
		}
		flat = append(flat, setOnly(e).Elems...)
	}
	// Sort and drop duplicates, then drop members implied by another
	// member; of two members implying each other, keep the first in order.
	sortTags(flat)
	flat = slices.CompactFunc(flat, func(x, y *Tag) bool { return x.Equal(y) })
	keep := make([]*Tag, 0, len(flat))
	for i, e := range flat {
		if o.exhausted() {
			return nil, false
		}
		drop := false
		for j, f := range flat {
			if i != j && o.implies(e, f) && (j < i || !o.implies(f, e)) {
				drop = true
				break
			}
		}
		if !drop {
			keep = append(keep, e)
		}
	}
	switch len(keep) {
	case 0:
		return nil, false
	case 1:
		return keep[0], true
	}
	return &Tag{Kind: TagSet, Elems: keep}, true
}

func setOnly(t *Tag) *Tag {
	if t.Kind == TagSet {
		return t
	}
	return &Tag{Kind: TagSet, Elems: []*Tag{t}}
}

func sortTags(ts []*Tag) {
	slices.SortFunc(ts, func(x, y *Tag) int {
		return bytes.Compare(Canonical(x.Sexp()), Canonical(y.Sexp()))
	})
}

// normAnd intersects octet-string constraints (prefixes and ranges). The
// normal form holds at most one alpha-or-prefix constraint and at most one
// range per other ordering; a prefix and an alpha range merge into one of
// them exactly, since (* prefix p) is the alpha interval [p, succ(p)).
func (o *tagOp) normAnd(elems []*Tag) (*Tag, bool) {
	var prefix []byte
	hasPrefix := false
	ranges := map[string]*Range{}
	for _, e := range elems {
		switch e.Kind {
		case TagPrefix:
			p := e.Atom.Value
			switch {
			case !hasPrefix || bytes.HasPrefix(p, prefix):
				prefix, hasPrefix = p, true
			case bytes.HasPrefix(prefix, p):
			default:
				return nil, false
			}
		case TagRange:
			r := *e.Range
			if cur, ok := ranges[r.Order]; ok {
				r = intersectRanges(cur, &r)
			}
			if r.empty() {
				return nil, false
			}
			ranges[r.Order] = &r
		default:
			return nil, false
		}
	}
	if _, ok := ranges[OrderNumeric]; ok {
		if _, ok := ranges[OrderTime]; ok {
			return nil, false // no string is both a number and a date
		}
	}
	var out []*Tag
	if alpha, ok := ranges[OrderAlpha]; ok && hasPrefix {
		pr := prefixRange(prefix)
		if rangeWithin(&pr, alpha) {
			delete(ranges, OrderAlpha)
		} else {
			r := intersectRanges(alpha, &pr)
			if r.empty() {
				return nil, false
			}
			ranges[OrderAlpha] = &r
			hasPrefix = false
		}
	}
	if hasPrefix {
		out = append(out, &Tag{Kind: TagPrefix, Atom: NewBytes(prefix)})
	}
	for _, r := range ranges {
		out = append(out, &Tag{Kind: TagRange, Range: r})
	}
	// Value-level checks for mixed orderings: a prefix that no numeric or
	// time value can have still leaves a non-empty-looking conjunction; that
	// is exact (it contains nothing) and harmless.
	if len(out) == 1 {
		return out[0], true
	}
	sortTags(out)
	return &Tag{Kind: TagAnd, Elems: out}, true
}

// prefixRange is the alpha interval of strings starting with p.
func prefixRange(p []byte) Range {
	r := Range{Order: OrderAlpha, Lower: p}
	// succ(p): drop trailing 0xff bytes, increment the last byte.
	s := bytes.TrimRight(p, "\xff")
	if len(s) > 0 {
		u := append([]byte(nil), s...)
		u[len(u)-1]++
		r.Upper, r.UpperStrict = u, true
	}
	return r
}

// rangeWithin reports whether every value of a is in b (same ordering).
func rangeWithin(a, b *Range) bool {
	if b.Lower != nil {
		if a.Lower == nil {
			return false
		}
		c := compareIn(a.Order, a.Lower, b.Lower)
		if c < 0 || (c == 0 && b.LowerStrict && !a.LowerStrict) {
			return false
		}
	}
	if b.Upper != nil {
		if a.Upper == nil {
			return false
		}
		c := compareIn(a.Order, a.Upper, b.Upper)
		if c > 0 || (c == 0 && b.UpperStrict && !a.UpperStrict) {
			return false
		}
	}
	return true
}

// intersectRanges tightens bounds; on equal values the strict bound wins,
// and of equal non-identical encodings (numeric "1.0" and "1") the one
// that sorts first, so that the result does not depend on argument order.
func intersectRanges(a, b *Range) Range {
	r := Range{Order: a.Order}
	r.Lower, r.LowerStrict = pickBound(a.Order, a.Lower, a.LowerStrict, b.Lower, b.LowerStrict, 1)
	r.Upper, r.UpperStrict = pickBound(a.Order, a.Upper, a.UpperStrict, b.Upper, b.UpperStrict, -1)
	return r
}

// pickBound returns the tighter of two bounds; dir is 1 for lower bounds
// (larger is tighter) and -1 for upper bounds.
func pickBound(order string, x []byte, xs bool, y []byte, ys bool, dir int) ([]byte, bool) {
	switch {
	case x == nil:
		return y, ys
	case y == nil:
		return x, xs
	}
	c := compareIn(order, x, y) * dir
	switch {
	case c > 0:
		return x, xs
	case c < 0:
		return y, ys
	case bytes.Compare(x, y) <= 0:
		return x, xs || ys
	default:
		return y, xs || ys
	}
}
