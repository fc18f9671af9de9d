package main

import "testing"

// TestParseSplitLine: a log line printed by a benchmark's setup between its
// name and its numbers does not lose the result.
func TestParseSplitLine(t *testing.T) {
	raw := []byte("BenchmarkA-2   \t2026-11-25T21:34:32.064Z\tINFO\tsomething logged\n" +
		"    2000\t      2954 ns/op\t    1135 B/op\t      14 allocs/op\n" +
		"BenchmarkB-2   \t    1000\t      100 ns/op\t    0 B/op\t      0 allocs/op\n")
	res, order := parse(raw)
	if len(order) != 2 || res["A"] == nil || res["A"].ns[0] != 2954 || res["A"].allocs != 14 || res["B"].ns[0] != 100 {
		t.Fatalf("parsed %v: %+v", order, res)
	}
}
