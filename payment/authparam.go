package payment

import (
	"strings"
)

// AuthChallenge is one challenge of a WWW-Authenticate value, of any scheme
// (RFC 9110 §11.3): a scheme and either a token68 or auth-params.
type AuthChallenge struct {
	Scheme  string      // as sent; compare case-insensitively
	Token68 string      // the token68, when the challenge has one instead of params
	Params  []AuthParam // in the order sent
}

// AuthParam is one auth-param: a name (lower-cased, as names are
// case-insensitive) and its value, unquoted.
type AuthParam struct {
	Name  string // lower case
	Value string // unquoted
}

// Param returns the value of the parameter name (lower case) and whether
// it is present.
func (c *AuthChallenge) Param(name string) (string, bool) {
	for _, p := range c.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// ParseAuthChallenges parses a WWW-Authenticate value into its challenges
// (RFC 9110 §11.6.1): several challenges may share one value, separated by
// commas as their parameters are. A parameter named twice in one challenge
// is refused (§11.2). Errors match ErrBadAuthParams.
func ParseAuthChallenges(h string) ([]AuthChallenge, error) {
	if len(h) > MaxChallengeLen {
		return nil, tooLarge(ErrBadAuthParams, len(h), MaxChallengeLen)
	}
	var out []AuthChallenge
	s := h
	for {
		s = skipListSeparators(s)
		if s == "" {
			return out, nil
		}
		scheme, rest := cutToken(s)
		if scheme == "" {
			return nil, fieldErr(ErrBadAuthParams, "", "expected an auth-scheme at %q", clip(s))
		}
		c := AuthChallenge{Scheme: scheme}
		s = rest
		if s != "" && s[0] != ',' {
			if s[0] != ' ' {
				return nil, fieldErr(ErrBadAuthParams, scheme, "expected a space after the auth-scheme")
			}
			var err error
			if c.Token68, c.Params, s, err = parseChallengeBody(trimOWS(s)); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
}

// parseChallengeBody reads a token68 or a list of auth-params, up to the
// start of the next challenge.
func parseChallengeBody(s string) (token68 string, params []AuthParam, rest string, err error) {
	if name, value, tail, ok, err := nextAuthParam(s); err != nil {
		return "", nil, "", err
	} else if !ok {
		if t, tail, ok := cutToken68(s); ok {
			return t, nil, tail, nil
		}
		if s != "" && s[0] != ',' {
			return "", nil, "", fieldErr(ErrBadAuthParams, "", "expected auth-params or a token68 at %q", clip(s))
		}
		return "", nil, s, nil // a bare scheme followed by another challenge
	} else {
		params = append(params, AuthParam{name, value})
		s = tail
	}
	for {
		s = trimOWS(s)
		if s == "" {
			return "", params, "", nil
		}
		if s[0] != ',' {
			return "", nil, "", fieldErr(ErrBadAuthParams, params[len(params)-1].Name, "expected ',' after the value, found %q", clip(s))
		}
		next := skipListSeparators(s)
		name, value, tail, ok, err := nextAuthParam(next)
		if err != nil {
			return "", nil, "", err
		}
		if !ok {
			return "", params, s, nil // the next challenge
		}
		for _, p := range params {
			if p.Name == name {
				return "", nil, "", fieldErr(ErrBadAuthParams, name, "parameter given twice")
			}
		}
		params = append(params, AuthParam{name, value})
		s = tail
	}
}

// nextAuthParam reads token BWS "=" BWS ( token / quoted-string ). ok is
// false, with no error, when s does not start with token BWS "=" followed
// by a value: a token68 or the next challenge's scheme.
func nextAuthParam(s string) (name, value, rest string, ok bool, err error) {
	name, r := cutToken(s)
	if name == "" {
		return "", "", s, false, nil
	}
	r = trimOWS(r)
	if r == "" || r[0] != '=' {
		return "", "", s, false, nil
	}
	r = trimOWS(r[1:])
	name = strings.ToLower(name)
	if r != "" && r[0] == '"' {
		value, r, err = cutQuoted(r)
		if err != nil {
			return "", "", "", false, fieldErr(ErrBadAuthParams, name, "%v", err)
		}
		return name, value, r, true, nil
	}
	value, r = cutToken(r)
	if value == "" {
		return "", "", s, false, nil
	}
	return name, value, r, true, nil
}

// cutToken68 reads 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
// *"=" followed by the end or a comma.
func cutToken68(s string) (string, string, bool) {
	i := 0
	for i < len(s) && isToken68Char(s[i]) {
		i++
	}
	if i == 0 {
		return "", s, false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	rest := trimOWS(s[i:])
	if rest != "" && rest[0] != ',' {
		return "", s, false
	}
	return s[:i], rest, true
}

// cutQuoted reads a quoted-string (RFC 9110 §5.6.4) and returns its value
// with the quoted-pairs undone.
func cutQuoted(s string) (value, rest string, err error) {
	var b []byte // allocated only when there is an escape
	start := 1
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			if b == nil {
				return s[start:i], s[i+1:], nil
			}
			return string(append(b, s[start:i]...)), s[i+1:], nil
		case c == '\\':
			if i+1 >= len(s) || !isQuotedPairChar(s[i+1]) {
				return "", "", errString("bad quoted-pair")
			}
			b = append(b, s[start:i]...)
			b = append(b, s[i+1])
			i++
			start = i + 1
		case !isQdtext(c):
			return "", "", errString("control byte in a quoted-string")
		}
	}
	return "", "", errString("unterminated quoted-string")
}

type errString string

// Error returns the message.
func (e errString) Error() string { return string(e) }

// appendQuoted appends s as a quoted-string, escaping '"' and '\\'. Bytes
// a quoted-string cannot hold (controls other than HTAB) are dropped:
// validate values before formatting them.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case isQdtext(c):
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func cutToken(s string) (string, string) {
	i := 0
	for i < len(s) && isTchar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func skipListSeparators(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t' || s[0] == ',') {
		s = s[1:]
	}
	return s
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

// isTchar: RFC 9110 §5.6.2.
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68Char(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0
}

// isQdtext: HTAB / SP / VCHAR except '"' and '\\' / obs-text.
func isQdtext(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || 0x23 <= c && c <= 0x5b || 0x5d <= c && c <= 0x7e || c >= 0x80
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || 0x21 <= c && c <= 0x7e || c >= 0x80
}

// hasCTL reports whether s holds a byte no quoted-string may carry.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}
