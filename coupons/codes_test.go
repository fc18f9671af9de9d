package coupons

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// wireCodes parses codes.go: each Code… constant's name, value and doc.
func wireCodes(t *testing.T) (names, values []string, docs map[string]string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	docs = map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s is not a string literal", n.Name)
				}
				v, _ := strconv.Unquote(lit.Value)
				names, values = append(names, n.Name), append(values, v)
				docs[n.Name] = vs.Doc.Text()
			}
		}
	}
	return names, values, docs
}

// TestWireCodesUniqueSnakeCaseDocumented: every reason code constant is
// named Code + the CamelCase of its value, is snake_case, differs from
// every other, has a doc comment, and docs/PROTOCOL.md lists it (in
// backquotes).
func TestWireCodesUniqueSnakeCaseDocumented(t *testing.T) {
	names, values, docs := wireCodes(t)
	if len(names) < 40 {
		t.Fatalf("only %d codes in codes.go", len(names))
	}
	protocol, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z]+(_[a-z0-9]+)*$`)
	seen := map[string]string{}
	for i, name := range names {
		v := values[i]
		if !snake.MatchString(v) {
			t.Errorf("%s = %q is not snake_case", name, v)
		}
		if other, ok := seen[v]; ok {
			t.Errorf("%s and %s are both %q", name, other, v)
		}
		seen[v] = name
		camel := "Code"
		for _, p := range strings.Split(v, "_") {
			camel += strings.ToUpper(p[:1]) + p[1:]
		}
		if name != camel {
			t.Errorf("%s = %q should be named %s", name, v, camel)
		}
		if !strings.HasPrefix(docs[name], name+" ") {
			t.Errorf("%s has no doc comment starting with its name", name)
		}
		if !strings.Contains(string(protocol), "`"+v+"`") {
			t.Errorf("docs/PROTOCOL.md does not list %s (`%s`)", name, v)
		}
	}
}
