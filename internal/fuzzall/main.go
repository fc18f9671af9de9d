// Command fuzzall runs every fuzz target of the module, one after the
// other, for a fixed time each, and prints a Markdown table of the results
// (target, time, executions, result). A target that fails leaves its
// failing input under the package's testdata/fuzz/<target>/, where `go
// test` keeps running it as a seed from then on: fix the bug, keep the
// file.
//
//	go run ./internal/fuzzall -time 10m          # every target, 10 minutes each
//	go run ./internal/fuzzall -time 30s -run Open # targets whose name matches
//	go run ./internal/fuzzall -pkg 'spki|store'   # targets of packages whose path matches
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

var execsRe = regexp.MustCompile(`execs: (\d+)`)

func main() {
	d := flag.Duration("time", 10*time.Minute, "fuzzing time per target")
	run := flag.String("run", "", "only targets whose name matches this regular expression")
	pkgRun := flag.String("pkg", "", "only packages whose import path (without the module's) matches this regular expression")
	flag.Parse()
	filter, pkgFilter := mustCompile("-run", *run), mustCompile("-pkg", *pkgRun)
	pkgs, err := output("go", "list", "./...")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzzall: go list:", err)
		os.Exit(1)
	}
	failed := 0
	fmt.Printf("| package | target | time | executions | result |\n|---|---|---|---:|---|\n")
	for _, pkg := range strings.Fields(pkgs) {
		if pkgFilter != nil && !pkgFilter.MatchString(strings.TrimPrefix(pkg, "github.com/ecoupons/ecoupons/")) {
			continue
		}
		list, err := output("go", "test", "-list", "^Fuzz", pkg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fuzzall: listing %s: %v\n", pkg, err)
			failed++
			continue
		}
		for _, target := range strings.Fields(list) {
			if !strings.HasPrefix(target, "Fuzz") || (filter != nil && !filter.MatchString(target)) {
				continue
			}
			start := time.Now()
			out, err := fuzz(pkg, target, *d)
			if err != nil && bytes.Contains(out, []byte("context deadline exceeded")) && !bytes.Contains(out, []byte("Failing input written")) {
				// The engine sometimes fails to stop its workers in time on
				// a loaded machine, which is not a finding: once more.
				out, err = fuzz(pkg, target, *d)
			}
			result := "pass"
			if err != nil {
				failed++
				result = "**FAIL**: " + firstFailure(out)
			}
			fmt.Printf("| %s | %s | %s | %s | %s |\n", strings.TrimPrefix(pkg, "github.com/ecoupons/ecoupons/"), target,
				time.Since(start).Round(time.Second), lastExecs(out), result)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// mustCompile compiles a flag's regular expression, nil for an empty one,
// and exits with a message naming the flag when it does not compile.
func mustCompile(name, expr string) *regexp.Regexp {
	if expr == "" {
		return nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fuzzall: %s: %v\n", name, err)
		os.Exit(2)
	}
	return re
}

func fuzz(pkg, target string, d time.Duration) ([]byte, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-fuzz", "^"+target+"$", "-fuzztime", d.String(), "-fuzzminimizetime", "30s", pkg)
	return cmd.CombinedOutput()
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// lastExecs is the execution count of the fuzzing engine's last status line.
func lastExecs(out []byte) string {
	m := execsRe.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return "?"
	}
	return string(m[len(m)-1][1])
}

// firstFailure is the first line that says what failed, for the table.
func firstFailure(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.Contains(l, "Failing input written") || strings.HasPrefix(l, "--- FAIL") || strings.Contains(l, "panic:") {
			return strings.ReplaceAll(l, "|", "/")
		}
	}
	return "see go test output"
}
