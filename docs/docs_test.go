// Package docs holds the living protocol specification (PROTOCOL.md) and a
// test that keeps its worked examples identical to the golden files the
// code is tested against.
package docs

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// A marker names a golden file; the fenced block right after it must show
// the file's bytes:
//
//	<!-- golden: path -->        the block is the file's text
//	<!-- golden-hex: path -->    the block is the file's bytes in hex (spaces and newlines ignored)
//	<!-- golden-quoted: path --> the block is a Go-quoted string of the file's bytes, split over
//	                             lines (each line one quoted piece)
var marker = regexp.MustCompile(`<!-- golden(-hex|-quoted)?: ([^ ]+) -->`)

var update = flag.Bool("update", false, "rewrite the blocks of PROTOCOL.md from the golden files")

func TestProtocolMatchesGoldenFiles(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	if *update {
		lines = rewriteBlocks(t, lines)
		if err := os.WriteFile("PROTOCOL.md", []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	found := 0
	for i, line := range lines {
		m := marker.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		found++
		kind, path := m[1], m[2]
		want, err := os.ReadFile(filepath.Join("..", path))
		if err != nil {
			t.Errorf("PROTOCOL.md:%d: %v", i+1, err)
			continue
		}
		block, ok := fencedBlockAfter(lines, i+1)
		if !ok {
			t.Errorf("PROTOCOL.md:%d: no fenced block after the marker for %s", i+1, path)
			continue
		}
		var got []byte
		switch kind {
		case "":
			got = []byte(block)
			want = bytes.TrimSuffix(want, []byte("\n"))
		case "-hex":
			got, err = hex.DecodeString(strings.Join(strings.Fields(block), ""))
		case "-quoted":
			var sb strings.Builder
			for _, q := range strings.Split(block, "\n") {
				var s string
				if s, err = strconv.Unquote(strings.TrimSpace(q)); err != nil {
					break
				}
				sb.WriteString(s)
			}
			got = []byte(sb.String())
		}
		if err != nil {
			t.Errorf("PROTOCOL.md:%d: block for %s: %v", i+1, path, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("PROTOCOL.md:%d: the block shown for %s differs from the golden file;\nfile:\n%s", i+1, path, want)
		}
	}
	if found < 10 {
		t.Errorf("only %d golden markers in PROTOCOL.md", found)
	}
}

// fencedBlockAfter returns the content of the first ``` block starting at
// or after line i (skipping blank lines only).
func fencedBlockAfter(lines []string, i int) (string, bool) {
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i >= len(lines) || !strings.HasPrefix(lines[i], "```") {
		return "", false
	}
	var body []string
	for j := i + 1; j < len(lines); j++ {
		if strings.HasPrefix(lines[j], "```") {
			return strings.Join(body, "\n"), true
		}
		body = append(body, lines[j])
	}
	return "", false
}

// rewriteBlocks replaces the block after each marker with the rendering of
// its golden file.
func rewriteBlocks(t *testing.T, lines []string) []string {
	var out []string
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("..", m[2]))
		if err != nil {
			t.Fatal(err)
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j >= len(lines) || !strings.HasPrefix(lines[j], "```") {
			t.Fatalf("PROTOCOL.md:%d: no block after marker", i+1)
		}
		k := j + 1
		for k < len(lines) && !strings.HasPrefix(lines[k], "```") {
			k++
		}
		out = append(out, lines[i+1:j+1]...)
		out = append(out, render(m[1], data)...)
		i = k - 1
	}
	return out
}

func render(kind string, data []byte) []string {
	switch kind {
	case "-hex":
		h := hex.EncodeToString(data)
		var out []string
		for len(h) > 64 {
			out, h = append(out, h[:64]), h[64:]
		}
		return append(out, h)
	case "-quoted":
		var out []string
		for len(data) > 0 {
			n := min(48, len(data))
			out, data = append(out, quoteBytes(data[:n])), data[n:]
		}
		return out
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// quoteBytes writes b as a Go string literal with every byte outside
// printable ASCII as \xNN, so the literal shows bytes, not runes.
func quoteBytes(b []byte) string {
	const digits = "0123456789abcdef"
	out := []byte{'"'}
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c >= 0x20 && c < 0x7f:
			out = append(out, c)
		default:
			out = append(out, '\\', 'x', digits[c>>4], digits[c&15])
		}
	}
	return string(append(out, '"'))
}
