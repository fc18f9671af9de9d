// Package testpg starts a throw-away PostgreSQL server for tests. Start
// skips the test with a clear message when PostgreSQL is not installed,
// and fails it instead under CI=true.
package testpg

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// binDir finds PostgreSQL's server binaries (Debian puts them in
// /usr/lib/postgresql/<version>/bin).
func binDir() string {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// Server is a running throw-away PostgreSQL server.
type Server struct {
	URL  string // postgres://postgres@127.0.0.1:port/postgres?sslmode=disable
	stop func()
}

// Stop stops the server and removes its data.
func (s *Server) Stop() { s.stop() }

// ErrNotInstalled means PostgreSQL's server binaries were not found.
var ErrNotInstalled = fmt.Errorf("PostgreSQL is not installed (apt-get install -y postgresql)")

// StartServer runs a PostgreSQL server on a free loopback port with its
// data in a temporary directory. As root (initdb refuses root), the server
// runs as the "postgres" system user. It returns ErrNotInstalled when the
// binaries are missing.
func StartServer() (*Server, error) {
	bin := binDir()
	if bin == "" {
		return nil, ErrNotInstalled
	}
	dir, err := os.MkdirTemp("", "ecoupons-pg-")
	if err != nil {
		return nil, err
	}
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and no postgres user: %w", ErrNotInstalled)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		full := append(append([]string(nil), asUser...), args...)
		if out, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v\n%s", args, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", port, dir)
	stop := func() {
		run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	}
	if err := run(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "30", "start"); err != nil {
		stop()
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return &Server{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), stop: stop}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("PostgreSQL did not start within 10s")
}

// Start is StartServer for one test: it skips the test when PostgreSQL is
// not installed (fails under CI=true) and stops the server when it ends.
func Start(t testing.TB) string {
	t.Helper()
	s, err := StartServer()
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(s.Stop)
	return s.URL
}

// Unavailable skips t because of err, or fails it under CI=true.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	msg := fmt.Sprintf("skipping the PostgreSQL test: %v", err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI=true, so this is a failure")
	}
	t.Skip(msg)
}
