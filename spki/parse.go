package spki

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// Sentinel errors returned (wrapped in a [*SyntaxError]) by the parsers.
var (
	// ErrSyntax is malformed S-expression syntax.
	ErrSyntax = errors.New("spki: syntax error")
	// ErrTruncated means the input ended inside an S-expression.
	ErrTruncated = errors.New("spki: truncated input")
	// ErrTrailing means bytes follow a complete S-expression.
	ErrTrailing = errors.New("spki: trailing data after S-expression")
	// ErrTooLarge means the input exceeds Limits.MaxSize or Limits.MaxNodes.
	ErrTooLarge = errors.New("spki: input too large")
	// ErrTooDeep means lists are nested deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("spki: nesting too deep")
	// ErrAtomTooLarge means an octet string exceeds Limits.MaxAtom.
	ErrAtomTooLarge = errors.New("spki: octet string too large")
	// ErrNotCanonical means ParseCanonical met a non-canonical encoding.
	ErrNotCanonical = errors.New("spki: not canonical form")
)

// SyntaxError reports where and why parsing failed. Err is one of the
// sentinel errors above, so callers can match with errors.Is.
type SyntaxError struct {
	Offset int    // byte offset of the problem in the input
	Msg    string // what was wrong
	Err    error  // sentinel
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%v at byte %d: %s", e.Err, e.Offset, e.Msg)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// Limits bound what a parser accepts from hostile input.
type Limits struct {
	MaxSize  int // total input bytes; default 1 MiB
	MaxDepth int // list nesting; default 64
	MaxAtom  int // bytes in one octet string (after decoding); default 64 KiB
	MaxNodes int // atoms plus lists; default 65536
}

// DefaultLimits are used by [Parse] and [ParseCanonical].
var DefaultLimits = Limits{MaxSize: 1 << 20, MaxDepth: 64, MaxAtom: 64 << 10, MaxNodes: 1 << 16}

// Parse parses one S-expression in any representation: canonical, advanced
// or transport ({base64}), with DefaultLimits. Surrounding whitespace is
// allowed; anything else after the expression is an error.
func Parse(b []byte) (Sexp, error) { return DefaultLimits.Parse(b) }

// ParseCanonical parses exactly one S-expression in canonical form with
// DefaultLimits. Any other representation, whitespace included, is refused
// with ErrNotCanonical: use it where the bytes themselves are hashed.
func ParseCanonical(b []byte) (Sexp, error) { return DefaultLimits.ParseCanonical(b) }

// Parse is [Parse] under the limits l.
func (l Limits) Parse(b []byte) (Sexp, error) { return l.parse(b, false) }

// ParseCanonical is [ParseCanonical] under the limits l.
func (l Limits) ParseCanonical(b []byte) (Sexp, error) { return l.parse(b, true) }

func (l Limits) parse(b []byte, canonical bool) (Sexp, error) {
	if len(b) > l.MaxSize {
		return nil, &SyntaxError{Offset: l.MaxSize, Msg: fmt.Sprintf("input is %d bytes, limit %d", len(b), l.MaxSize), Err: ErrTooLarge}
	}
	// One copy of the input: atoms of verbatim strings slice into it, so a
	// caller may reuse its buffer.
	buf := make([]byte, len(b))
	copy(buf, b)
	p := &parser{in: buf, lim: l, canonical: canonical}
	if !canonical {
		p.skipSpace()
	}
	var v Sexp
	var err error
	if !canonical && p.pos < len(p.in) && p.in[p.pos] == '{' {
		v, err = p.transport()
	} else {
		v, err = p.value(0)
	}
	if err != nil {
		return nil, err
	}
	if !canonical {
		p.skipSpace()
	}
	if p.pos != len(p.in) {
		return nil, p.errf(ErrTrailing, "%d unexpected bytes", len(p.in)-p.pos)
	}
	return v, nil
}

type parser struct {
	in        []byte
	pos       int
	base      int // offset of in within the caller's input (for nested transport)
	lim       Limits
	canonical bool
	nodes     int
}

func (p *parser) errf(sentinel error, format string, args ...any) error {
	return &SyntaxError{Offset: p.base + p.pos, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func (p *parser) errAt(off int, sentinel error, format string, args ...any) error {
	return &SyntaxError{Offset: p.base + off, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// isTokenChar reports whether c may appear in a token (RFC 9804 §4.3:
// alphanumerics and the simple punctuation "-./_:*+=").
func isTokenChar(c byte) bool {
	switch c {
	case '-', '.', '/', '_', ':', '*', '+', '=':
		return true
	}
	return isAlpha(c) || isDigit(c)
}

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isBase64Char(c byte) bool { return isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=' }

func (p *parser) skipSpace() {
	for p.pos < len(p.in) && isSpace(p.in[p.pos]) {
		p.pos++
	}
}

func (p *parser) node() error {
	p.nodes++
	if p.nodes > p.lim.MaxNodes {
		return p.errf(ErrTooLarge, "more than %d atoms and lists", p.lim.MaxNodes)
	}
	return nil
}

func (p *parser) value(depth int) (Sexp, error) {
	if p.pos >= len(p.in) {
		return nil, p.errf(ErrTruncated, "expected an S-expression")
	}
	switch c := p.in[p.pos]; {
	case c == '(':
		return p.list(depth)
	case c == ')':
		return nil, p.errf(ErrSyntax, "unexpected ')'")
	default:
		return p.atom()
	}
}

func (p *parser) list(depth int) (Sexp, error) {
	if depth >= p.lim.MaxDepth {
		return nil, p.errf(ErrTooDeep, "lists nested deeper than %d", p.lim.MaxDepth)
	}
	if err := p.node(); err != nil {
		return nil, err
	}
	p.pos++ // '('
	l := List{}
	for {
		if !p.canonical {
			p.skipSpace()
		}
		if p.pos >= len(p.in) {
			return nil, p.errf(ErrTruncated, "list not closed")
		}
		if p.in[p.pos] == ')' {
			p.pos++
			return l, nil
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		l = append(l, v)
	}
}

// transport parses the basic transport form "{" base64(canonical) "}"
// (RFC 9804 §6.1, §7.3). It stands for a whole S-expression: the ABNF of
// the advanced form does not allow it inside a list.
func (p *parser) transport() (Sexp, error) {
	start := p.pos
	p.pos++
	enc := make([]byte, 0, 64)
	for {
		if p.pos >= len(p.in) {
			return nil, p.errAt(start, ErrTruncated, "'{' not closed")
		}
		c := p.in[p.pos]
		if c == '}' {
			p.pos++
			break
		}
		if isSpace(c) {
			p.pos++
			continue
		}
		if !isBase64Char(c) {
			return nil, p.errf(ErrSyntax, "byte %q in transport base64", c)
		}
		enc = append(enc, c)
		p.pos++
	}
	raw, err := decodeBase64(enc)
	if err != nil {
		return nil, p.errAt(start, ErrSyntax, "transport base64: %v", err)
	}
	sub := &parser{in: raw, lim: p.lim, canonical: true, nodes: p.nodes}
	v, err := sub.value(0)
	if err != nil {
		// Offsets inside the decoded block do not map to input bytes: name
		// the block's '{' and say where in the decoded bytes it failed.
		var se *SyntaxError
		if errors.As(err, &se) {
			return nil, p.errAt(start, se.Err, "%s (at byte %d of the decoded transport block)", se.Msg, se.Offset)
		}
		return nil, err
	}
	if sub.pos != len(raw) {
		return nil, p.errAt(start, ErrTrailing, "transport block holds more than one S-expression")
	}
	p.nodes = sub.nodes
	return v, nil
}

func (p *parser) atom() (Sexp, error) {
	if err := p.node(); err != nil {
		return nil, err
	}
	a := &Atom{}
	if p.in[p.pos] == '[' {
		p.pos++
		if !p.canonical {
			p.skipSpace()
		}
		h, err := p.simpleString()
		if err != nil {
			return nil, err
		}
		if !p.canonical {
			p.skipSpace()
		}
		if p.pos >= len(p.in) {
			return nil, p.errf(ErrTruncated, "display hint not closed")
		}
		if p.in[p.pos] != ']' {
			return nil, p.errf(ErrSyntax, "expected ']' after display hint, found %q", p.in[p.pos])
		}
		p.pos++
		if !p.canonical {
			p.skipSpace()
		}
		a.Hint = h
		if a.Hint == nil {
			a.Hint = []byte{}
		}
	}
	v, err := p.simpleString()
	if err != nil {
		return nil, err
	}
	a.Value = v
	if a.Value == nil {
		a.Value = []byte{}
	}
	return a, nil
}

// simpleString parses one octet string in any of the forms of RFC 9804 §4:
// verbatim (3:abc), token, quoted ("abc" or 3"abc"), hexadecimal (#616263#)
// and base-64 (|YWJj|), the last three with an optional length prefix.
func (p *parser) simpleString() ([]byte, error) {
	if p.pos >= len(p.in) {
		return nil, p.errf(ErrTruncated, "expected an octet string")
	}
	start := p.pos
	c := p.in[p.pos]
	if isDigit(c) {
		n, err := p.decimal()
		if err != nil {
			return nil, err
		}
		if p.pos >= len(p.in) {
			return nil, p.errf(ErrTruncated, "length prefix not followed by a string")
		}
		switch p.in[p.pos] {
		case ':':
			p.pos++
			if n > len(p.in)-p.pos {
				return nil, p.errAt(start, ErrTruncated, "verbatim string of %d bytes, %d left", n, len(p.in)-p.pos)
			}
			v := p.in[p.pos : p.pos+n : p.pos+n]
			p.pos += n
			return v, nil
		case '"', '#', '|':
			if p.canonical {
				return nil, p.errf(ErrNotCanonical, "only verbatim strings are canonical")
			}
			v, err := p.encodedString()
			if err != nil {
				return nil, err
			}
			if len(v) != n {
				return nil, p.errAt(start, ErrSyntax, "length prefix %d but string has %d bytes", n, len(v))
			}
			return v, nil
		default:
			return nil, p.errf(ErrSyntax, "expected ':' after length, found %q", p.in[p.pos])
		}
	}
	if p.canonical {
		return nil, p.errf(ErrNotCanonical, "expected a verbatim string, found %q", c)
	}
	if isTokenChar(c) {
		for p.pos < len(p.in) && isTokenChar(p.in[p.pos]) {
			p.pos++
		}
		if p.pos-start > p.lim.MaxAtom {
			return nil, p.errAt(start, ErrAtomTooLarge, "token of %d bytes, limit %d", p.pos-start, p.lim.MaxAtom)
		}
		return p.in[start:p.pos:p.pos], nil
	}
	switch c {
	case '"', '#', '|':
		return p.encodedString()
	}
	return nil, p.errf(ErrSyntax, "unexpected byte %q", c)
}

// decimal parses a length prefix: no leading zeros, at most MaxAtom.
func (p *parser) decimal() (int, error) {
	start := p.pos
	n := 0
	for p.pos < len(p.in) && isDigit(p.in[p.pos]) {
		if p.pos > start && p.in[start] == '0' {
			return 0, p.errAt(start, ErrSyntax, "length with a leading zero")
		}
		n = n*10 + int(p.in[p.pos]-'0')
		if n > p.lim.MaxAtom {
			return 0, p.errAt(start, ErrAtomTooLarge, "length exceeds limit %d", p.lim.MaxAtom)
		}
		p.pos++
	}
	return n, nil
}

func (p *parser) encodedString() ([]byte, error) {
	switch p.in[p.pos] {
	case '"':
		return p.quoted()
	case '#':
		return p.hexString()
	default:
		return p.base64String()
	}
}

func (p *parser) hexString() ([]byte, error) {
	start := p.pos
	p.pos++
	digits := make([]byte, 0, 32)
	for {
		if p.pos >= len(p.in) {
			return nil, p.errAt(start, ErrTruncated, "'#' string not closed")
		}
		c := p.in[p.pos]
		p.pos++
		switch {
		case c == '#':
			if len(digits)%2 != 0 {
				return nil, p.errAt(start, ErrSyntax, "odd number of hex digits")
			}
			out := make([]byte, len(digits)/2)
			for i := range out {
				out[i] = unhex(digits[2*i])<<4 | unhex(digits[2*i+1])
			}
			return out, nil
		case isSpace(c):
		case isHex(c):
			if len(digits)/2 >= p.lim.MaxAtom {
				return nil, p.errAt(start, ErrAtomTooLarge, "hex string exceeds limit %d", p.lim.MaxAtom)
			}
			digits = append(digits, c)
		default:
			return nil, p.errAt(p.pos-1, ErrSyntax, "byte %q in hex string", c)
		}
	}
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func (p *parser) base64String() ([]byte, error) {
	start := p.pos
	p.pos++
	enc := make([]byte, 0, 64)
	for {
		if p.pos >= len(p.in) {
			return nil, p.errAt(start, ErrTruncated, "'|' string not closed")
		}
		c := p.in[p.pos]
		p.pos++
		switch {
		case c == '|':
			out, err := decodeBase64(enc)
			if err != nil {
				return nil, p.errAt(start, ErrSyntax, "base64 string: %v", err)
			}
			return out, nil
		case isSpace(c):
		case isBase64Char(c):
			if len(enc)/4*3 > p.lim.MaxAtom {
				return nil, p.errAt(start, ErrAtomTooLarge, "base64 string exceeds limit %d", p.lim.MaxAtom)
			}
			enc = append(enc, c)
		default:
			return nil, p.errAt(p.pos-1, ErrSyntax, "byte %q in base64 string", c)
		}
	}
}

// decodeBase64 accepts standard base64 with or without '=' padding.
func decodeBase64(enc []byte) ([]byte, error) {
	e := base64.StdEncoding.Strict()
	if len(enc)%4 != 0 {
		e = base64.RawStdEncoding.Strict()
	}
	out := make([]byte, e.DecodedLen(len(enc)))
	n, err := e.Decode(out, enc)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// quoted parses a quoted string (RFC 9804 §4.2, §7.1): printable ASCII
// other than '"' and '\\' stands for itself; the escapes are \a \b \t \v \n
// \f \r \" \' \? \\, \ooo (three octal digits), \xhh (two hex digits), and a
// backslash before a line break (CR, LF, CRLF or LFCR), which is removed.
func (p *parser) quoted() ([]byte, error) {
	start := p.pos
	p.pos++
	out := make([]byte, 0, 32)
	for {
		if p.pos >= len(p.in) {
			return nil, p.errAt(start, ErrTruncated, "quoted string not closed")
		}
		if len(out) > p.lim.MaxAtom {
			return nil, p.errAt(start, ErrAtomTooLarge, "quoted string exceeds limit %d", p.lim.MaxAtom)
		}
		c := p.in[p.pos]
		p.pos++
		if c == '"' {
			return out, nil
		}
		if c != '\\' {
			if c < 0x20 || c > 0x7e {
				return nil, p.errAt(p.pos-1, ErrSyntax, "byte %#02x in quoted string must be escaped", c)
			}
			out = append(out, c)
			continue
		}
		if p.pos >= len(p.in) {
			return nil, p.errAt(start, ErrTruncated, "quoted string ends in an escape")
		}
		esc := p.in[p.pos]
		p.pos++
		switch esc {
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case 'n':
			out = append(out, '\n')
		case 'f':
			out = append(out, '\f')
		case 'r':
			out = append(out, '\r')
		case '"', '\'', '?', '\\':
			out = append(out, esc)
		case '\r', '\n':
			if p.pos < len(p.in) && (p.in[p.pos] == '\r' || p.in[p.pos] == '\n') && p.in[p.pos] != esc {
				p.pos++
			}
		case 'x':
			if p.pos+2 > len(p.in) || !isHex(p.in[p.pos]) || !isHex(p.in[p.pos+1]) {
				return nil, p.errAt(p.pos-2, ErrSyntax, "\\x must be followed by two hex digits")
			}
			out = append(out, unhex(p.in[p.pos])<<4|unhex(p.in[p.pos+1]))
			p.pos += 2
		case '0', '1', '2', '3':
			if p.pos+2 > len(p.in) || !isOctal(p.in[p.pos]) || !isOctal(p.in[p.pos+1]) {
				return nil, p.errAt(p.pos-2, ErrSyntax, "octal escape needs three digits")
			}
			out = append(out, (esc-'0')<<6|(p.in[p.pos]-'0')<<3|(p.in[p.pos+1]-'0'))
			p.pos += 2
		default:
			return nil, p.errAt(p.pos-2, ErrSyntax, "unknown escape \\%c", esc)
		}
	}
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
