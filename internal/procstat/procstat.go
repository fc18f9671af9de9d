// Package procstat reads what the measuring harnesses report about their
// own process and files (Linux): resident memory, CPU time, and the bytes
// a directory holds.
package procstat

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RSS is the process's resident memory in bytes, all of it and its
// anonymous part (the rest is mapped files: an embedded store's pages,
// the executable); zeros where /proc/self/status cannot be read.
func RSS() (all, anon int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				all = kb << 10
			case "RssAnon:":
				anon = kb << 10
			}
		}
	}
	return all, anon
}

// CPUTime is the process's user and system CPU time so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// DirSize is the bytes of the files under dir.
func DirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
