package spki

import (
	"bufio"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
)

func mustTag(t testing.TB, s string) *Tag {
	t.Helper()
	x, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	tag, err := ParseTag(x)
	if err != nil {
		t.Fatalf("ParseTag(%q): %v", s, err)
	}
	return tag
}

type tagVector struct {
	line    int
	a, b, r string
}

func readTagVectors(t testing.TB) []tagVector {
	t.Helper()
	f, err := os.Open("testdata/tags.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tagVector
	var cur tagVector
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "a: "):
			cur = tagVector{line: n, a: line[3:]}
		case strings.HasPrefix(line, "b: "):
			cur.b = line[3:]
		case strings.HasPrefix(line, "=: "):
			cur.r = line[3:]
			out = append(out, cur)
		}
	}
	return out
}

func TestIntersectVectors(t *testing.T) {
	vs := readTagVectors(t)
	if len(vs) < 30 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		a, b := mustTag(t, v.a), mustTag(t, v.b)
		for _, pair := range [][2]*Tag{{a, b}, {b, a}} {
			got, ok := Intersect(pair[0], pair[1])
			if v.r == "empty" {
				if ok {
					t.Errorf("line %d: %s ∩ %s = %s, want empty", v.line, pair[0], pair[1], got)
				}
				continue
			}
			if !ok {
				t.Errorf("line %d: %s ∩ %s is empty, want %s", v.line, pair[0], pair[1], v.r)
				continue
			}
			want := mustTag(t, v.r)
			if !got.Equal(want) {
				t.Errorf("line %d: %s ∩ %s = %s, want %s", v.line, pair[0], pair[1], got, want)
			}
		}
	}
}

// allVectorTags returns every tag appearing in the vectors, for law tests.
func allVectorTags(t testing.TB) []*Tag {
	var out []*Tag
	for _, v := range readTagVectors(t) {
		out = append(out, mustTag(t, v.a), mustTag(t, v.b))
		if v.r != "empty" {
			out = append(out, mustTag(t, v.r))
		}
	}
	return out
}

// concreteSamples are requests used to check Intersect point by point.
var concreteSamples = []string{
	`"7"`, `"10"`, `"5"`, `"9"`, `"0"`, "-3.5", `"1.5"`, `"12"`, `"1"`, `"07"`, "abc", "ab", "abd", "c", "cm", "cz", "b", "x",
	`"2026-06-01_00:00:00"`, `"2026-12-31_23:59:59"`, "#0100#", "#00000200#", "#ffff01#", "[text/plain]abc",
	"read", "write", "delete", "a", "/pub/a/b", "/etc/passwd",
	"(ftp example.com)", "(ftp example.com /pub)", "(ftp example.org x)", "(a b d)", "(a c d)", "(a b)",
	"(ecoupons-spend (book |AAAA|) (lanes \"7\") (vendor news.example))",
	"(ecoupons-spend (book |AAAA|) (lanes \"12\") (vendor news.example))",
	"(ecoupons-spend (book |AAAA|) (lanes \"7\"))",
}

func TestIntersectLaws(t *testing.T) {
	tags := allVectorTags(t)
	var xs []Sexp
	for _, s := range concreteSamples {
		x, err := Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		xs = append(xs, x)
	}
	for _, a := range tags {
		checkIdempotent(t, a)
		for _, b := range tags {
			checkLaws(t, a, b, xs)
		}
	}
}

func checkIdempotent(t testing.TB, a *Tag) {
	t.Helper()
	if aa, ok := Intersect(a, a); !ok || !aa.Equal(a) {
		t.Errorf("not idempotent: %s ∩ %s = %v", a, a, aa)
	}
	if !Implies(a, a) {
		t.Errorf("%s does not imply itself", a)
	}
}

func checkLaws(t testing.TB, a, b *Tag, xs []Sexp) {
	t.Helper()
	ab, ok1 := Intersect(a, b)
	ba, ok2 := Intersect(b, a)
	if ok1 != ok2 || (ok1 && !ab.Equal(ba)) {
		t.Errorf("not commutative: %s ∩ %s = %v (%v), reversed %v (%v)", a, b, ab, ok1, ba, ok2)
		return
	}
	if ok1 {
		if !Implies(ab, a) || !Implies(ab, b) {
			t.Errorf("%s ∩ %s = %s does not imply both", a, b, ab)
		}
		// The normal form is stable: parsing its encoding gives it back.
		back, err := ParseTag(ab.Sexp())
		if err != nil || !back.Equal(ab) {
			t.Errorf("normal form %s does not re-parse to itself: %v %v", ab, back, err)
		}
	}
	for _, x := range xs {
		want := a.Contains(x) && b.Contains(x)
		got := ok1 && ab.Contains(x)
		if got != want {
			t.Errorf("not exact: %s ∩ %s = %v contains %s: %v, want %v", a, b, ab, x, got, want)
		}
	}
}

func TestImplies(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"(ftp example.com /pub)", "(ftp example.com)", true},
		{"(ftp example.com)", "(ftp example.com /pub)", false},
		{"(* range numeric ge \"3\" le \"4\")", "(* range numeric ge \"0\" le \"9\")", true},
		{"(* range numeric ge \"3\" le \"14\")", "(* range numeric ge \"0\" le \"9\")", false},
		{"(* set \"1\" \"2\")", "(* range numeric ge \"0\" le \"9\")", true},
		{"(* set \"1\" \"20\")", "(* range numeric ge \"0\" le \"9\")", false},
		{"(* prefix ab)", "(* range alpha ge a le b)", true},
		{"(*)", "(ftp)", false},
		{"(ftp)", "(*)", true},
	}
	for _, c := range cases {
		if got := Implies(mustTag(t, c.a), mustTag(t, c.b)); got != c.want {
			t.Errorf("Implies(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestParseTagErrors(t *testing.T) {
	bad := []string{
		"()",
		"(* bogus)",
		"(* set)",
		"(* prefix)",
		"(* prefix a b)",
		"(* prefix [h]a)",
		"(* range)",
		"(* range roman ge I)",
		"(* range numeric ge x)",
		"(* range numeric ge \"01\")",
		"(* range numeric ge \"1.\")",
		"(* range time ge \"2026-13-01_00:00:00\")",
		"(* range time ge \"2026-01-01T00:00:00Z\")",
		"(* range numeric le \"1\" ge \"0\")",
		"(* range numeric ge \"0\" ge \"1\")",
		"(* range numeric ge)",
		"(* range numeric ge \"5\" le \"1\")",
		"(* range numeric gt \"5\" le \"5\")",
		"(* and (* prefix a) (* prefix b))",
		"(* set " + strings.Repeat("a ", maxTagElems+1) + ")",
		"((* bogus))",
	}
	for _, s := range bad {
		x, err := Parse([]byte(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if _, err := ParseTag(x); !errors.Is(err, ErrBadTag) {
			t.Errorf("ParseTag(%s) = %v, want ErrBadTag", s, err)
		}
	}
}

func TestPrefixRangeEdges(t *testing.T) {
	// A prefix of 0xff bytes has no successor: its interval is unbounded.
	p := mustTag(t, "(* prefix #ffff#)")
	x, _ := Parse([]byte("#ffffff00#"))
	r := mustTag(t, "(* range alpha ge #ff#)")
	got, ok := Intersect(p, r)
	if !ok || !got.Equal(p) || !got.Contains(x) {
		t.Errorf("prefix #ffff# ∩ range ge #ff# = %v", got)
	}
}

func TestNumericOrderMatchesBigRat(t *testing.T) {
	vals := []string{"0", "-0", "1", "-1", "1.0", "1.5", "1.50", "-1.5", "10", "9.999", "100", "-100.25", "0.001", "0.0010", "12345678901234567890123", "-12345678901234567890123.5"}
	for _, a := range vals {
		for _, b := range vals {
			x, okx := parseNumeric([]byte(a))
			y, oky := parseNumeric([]byte(b))
			if !okx || !oky {
				t.Fatalf("%q or %q not numeric", a, b)
			}
			ra, _ := new(big.Rat).SetString(a)
			rb, _ := new(big.Rat).SetString(b)
			if got, want := cmpNumeric(x, y), ra.Cmp(rb); got != want {
				t.Errorf("cmp(%s, %s) = %d, want %d", a, b, got, want)
			}
		}
	}
	for _, bad := range []string{"", "-", "01", "1.", ".1", "1e5", "+1", "1.2.3", "--1", "0x1"} {
		if _, ok := parseNumeric([]byte(bad)); ok {
			t.Errorf("%q accepted as numeric", bad)
		}
	}
}
