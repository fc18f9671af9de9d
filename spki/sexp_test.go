package spki

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

type sexpVector struct {
	line         int
	in, can, tr  []byte
	hasTransport bool
}

// readSexpVectors reads testdata/rfc9804.txt (format described in its
// header).
func readSexpVectors(t testing.TB) []sexpVector {
	t.Helper()
	f, err := os.Open("testdata/rfc9804.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sexpVector
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("rfc9804.txt:%d: malformed line", n)
		}
		s, err := strconv.Unquote(strings.TrimSpace(val))
		if err != nil {
			t.Fatalf("rfc9804.txt:%d: %v", n, err)
		}
		switch key {
		case "in":
			out = append(out, sexpVector{line: n, in: []byte(s)})
		case "can":
			out[len(out)-1].can = []byte(s)
		case "tr":
			out[len(out)-1].tr, out[len(out)-1].hasTransport = []byte(s), true
		default:
			t.Fatalf("rfc9804.txt:%d: unknown key %q", n, key)
		}
	}
	if len(out) < 40 {
		t.Fatalf("only %d vectors read", len(out))
	}
	return out
}

func TestRFC9804Vectors(t *testing.T) {
	for _, v := range readSexpVectors(t) {
		s, err := Parse(v.in)
		if err != nil {
			t.Errorf("line %d: Parse(%q): %v", v.line, v.in, err)
			continue
		}
		if got := Canonical(s); !bytes.Equal(got, v.can) {
			t.Errorf("line %d: Canonical(%q) = %q, want %q", v.line, v.in, got, v.can)
		}
		// The canonical form parses strictly and gives the same value.
		c, err := ParseCanonical(v.can)
		if err != nil {
			t.Errorf("line %d: ParseCanonical(%q): %v", v.line, v.can, err)
		} else if !Equal(c, s) {
			t.Errorf("line %d: canonical parse differs", v.line)
		}
		if v.hasTransport && !bytes.Equal(Transport(s), v.tr) {
			t.Errorf("line %d: Transport = %s, want %s", v.line, Transport(s), v.tr)
		}
		// Every form we emit parses back to the same value.
		for name, enc := range map[string][]byte{"advanced": Advanced(s), "indented": AdvancedIndent(s), "transport": Transport(s)} {
			back, err := Parse(enc)
			if err != nil || !Equal(back, s) {
				t.Errorf("line %d: %s form %q does not round-trip: %v", v.line, name, enc, err)
			}
		}
	}
}

func TestAdvancedChoosesReadableForms(t *testing.T) {
	s := L("cert", "hi there", []byte{0, 1}, bytes.Repeat([]byte{0xff}, 6), "", &Atom{Hint: []byte("text/plain"), Value: []byte("x")}, "3d", "q\"\\")
	want := `(cert "hi there" #0001# |////////| "" [text/plain]x "3d" "q\"\\")`
	if got := string(Advanced(s)); got != want {
		t.Errorf("Advanced = %s\nwant       %s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	lim := Limits{MaxSize: 64, MaxDepth: 3, MaxAtom: 8, MaxNodes: 10}
	cases := []struct {
		in     string
		err    error
		offset int
	}{
		{"", ErrTruncated, 0},
		{"(abc", ErrTruncated, 4},
		{"(3:ab", ErrTruncated, 1},
		{"3:abc)", ErrTrailing, 5},
		{"(a) b", ErrTrailing, 4},
		{")", ErrSyntax, 0},
		{"((((a))))", ErrTooDeep, 3},
		{"9:aaaaaaaaa", ErrAtomTooLarge, 0},
		{"123456789:a", ErrAtomTooLarge, 0},
		{"aaaaaaaaaa", ErrAtomTooLarge, 0},
		{"(a b c d e f g h i j)", ErrTooLarge, 19},
		{strings.Repeat(" ", 65), ErrTooLarge, 64},
		{"03:abc", ErrSyntax, 0},
		{"3x", ErrSyntax, 1},
		{"#6#", ErrSyntax, 0},
		{"#6g#", ErrSyntax, 2},
		{"|YW!j|", ErrSyntax, 3},
		{"|Y|", ErrSyntax, 0},
		{"\"abc", ErrTruncated, 0},
		{"\"a\\qb\"", ErrSyntax, 2},
		{"\"a\\x4\"", ErrSyntax, 2},
		{"\"a\\47\"", ErrSyntax, 2},
		{"\"a\x01\"", ErrSyntax, 2},
		{"4\"abc\"", ErrSyntax, 0},
		{"[a", ErrTruncated, 2},
		{"[a b", ErrSyntax, 3},
		{"{KDE6YSk}x", ErrTrailing, 9},
		{"{!}", ErrSyntax, 1},
		{"{MTph}", ErrSyntax, 0}, // "1:a" is fine, but "{" must hold exactly one c-sexp: MTph decodes to "1:a" -> ok? see below
		{"(a {KDE6YSk=})", ErrSyntax, 3},
		{"{KDE6YSAxOmIp}", ErrNotCanonical, 0}, // "(1:a 1:b)": whitespace inside transport
		{"&", ErrSyntax, 0},
	}
	for _, c := range cases {
		if c.in == "{MTph}" {
			// "1:a" is a valid canonical atom: the transport form of an atom.
			if s, err := lim.Parse([]byte(c.in)); err != nil || string(Canonical(s)) != "1:a" {
				t.Errorf("Parse(%q) = %v, %v", c.in, s, err)
			}
			continue
		}
		_, err := lim.Parse([]byte(c.in))
		var se *SyntaxError
		if !errors.Is(err, c.err) || !errors.As(err, &se) {
			t.Errorf("Parse(%q) error = %v, want %v", c.in, err, c.err)
			continue
		}
		if se.Offset != c.offset {
			t.Errorf("Parse(%q) offset = %d, want %d (%v)", c.in, se.Offset, c.offset, err)
		}
		if !strings.Contains(err.Error(), "at byte "+strconv.Itoa(c.offset)) {
			t.Errorf("Parse(%q) message %q does not name the offset", c.in, err)
		}
	}
}

func TestParseCanonicalRefusesOtherForms(t *testing.T) {
	for _, in := range []string{"abc", "(1:a 1:b)", " 1:a", "#61#", "{MTph}", "(1:a)\n", "[ 1:a]1:b"} {
		if _, err := ParseCanonical([]byte(in)); err == nil {
			t.Errorf("ParseCanonical(%q) accepted", in)
		}
	}
	if _, err := ParseCanonical([]byte("(1:a)\n")); !errors.Is(err, ErrTrailing) {
		t.Errorf("trailing newline: %v", err)
	}
	if _, err := ParseCanonical([]byte("(1:a 1:b)")); !errors.Is(err, ErrNotCanonical) {
		t.Errorf("whitespace: %v", err)
	}
}

func TestParseCopiesInput(t *testing.T) {
	in := []byte("(3:abc def)")
	s, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'x'
	}
	if got := string(Canonical(s)); got != "(3:abc3:def)" {
		t.Errorf("parsed value changed with the input buffer: %s", got)
	}
}

func TestDeepNestingRefusedNotCrashing(t *testing.T) {
	in := strings.Repeat("(", 100000) + strings.Repeat(")", 100000)
	_, err := Parse([]byte(in))
	if !errors.Is(err, ErrTooDeep) {
		t.Fatalf("err = %v", err)
	}
}
