package testredis

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cluster is a throw-away Redis Cluster on loopback: masters with one
// replica each, every node appending with fsync always, a short node
// timeout (1s) so that a killed master fails over within seconds.
type Cluster struct {
	// URL names every node in go-redis's cluster URL form
	// (redis://host:port?addr=host:port&…).
	URL   string
	dir   string
	mu    sync.Mutex
	nodes map[int]*exec.Cmd // by port
	args  map[int][]string  // every node's command line, by port
}

// StartCluster starts a cluster of masters masters and one replica each
// and returns it once every slot is served. It skips the test (fails it
// under CI=true) when redis-server or redis-cli is not installed. The
// cluster stops when the test ends.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	c, err := NewCluster(t.TempDir(), masters)
	if err != nil {
		SkipOrFail(t, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// SkipOrFail ends the test on NewCluster's error: a skip with a clear
// message when Redis is not installed (a failure under CI=true), else a
// failure.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if _, ok := err.(notInstalled); ok {
		if os.Getenv("CI") == "true" {
			t.Fatal(err.Error() + " — CI=true, so this is a failure")
		}
		t.Skip(err.Error())
	}
	t.Fatal(err)
}

// NewCluster is StartCluster for a cluster that outlives one test (shared
// by a package's tests): the caller stops it. Its data is under dir.
func NewCluster(dir string, masters int) (*Cluster, error) {
	c, err := startCluster(dir, masters)
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

type notInstalled struct{ what string }

func (e notInstalled) Error() string {
	return e.what + " is not installed (apt-get install -y redis-server): skipping the Redis Cluster test"
}

func startCluster(dir string, masters int) (*Cluster, error) {
	c := &Cluster{dir: dir, nodes: map[int]*exec.Cmd{}, args: map[int][]string{}}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return c, notInstalled{"redis-server"}
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return c, notInstalled{"redis-cli"}
	}
	var addrs []string
	for k := 0; k < 2*masters; k++ {
		port, err := clusterPort()
		if err != nil {
			return c, err
		}
		nd := filepath.Join(dir, strconv.Itoa(port))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return c, err
		}
		cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", nd,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "yes")
		if err := cmd.Start(); err != nil {
			return c, err
		}
		c.mu.Lock()
		c.nodes[port] = cmd
		c.args[port] = cmd.Args
		c.mu.Unlock()
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, a := range addrs {
		if err := waitListening(a); err != nil {
			return c, err
		}
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		return c, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Every node must agree that every slot is served.
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			out, _ := exec.Command(cli, "-h", "127.0.0.1", "-p", portOf(a), "cluster", "info").Output()
			if bytes.Contains(out, []byte("cluster_state:ok")) {
				break
			}
			if time.Now().After(deadline) {
				return c, fmt.Errorf("cluster not ok within 20s at %s:\n%s", a, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Every master must have its replica attached and in sync, or the
	// first writes that wait for a replica time out.
	for _, a := range addrs {
		for {
			out, _ := exec.Command(cli, "-h", "127.0.0.1", "-p", portOf(a), "info", "replication").Output()
			if bytes.Contains(out, []byte("role:slave")) || bytes.Contains(out, []byte("state=online")) {
				break
			}
			if time.Now().After(deadline) {
				return c, fmt.Errorf("replica of %s not in sync within 20s:\n%s", a, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	c.URL = "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
	return c, nil
}

// anyPort is the port of a running node.
func (c *Cluster) anyPort() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.nodes {
		return p
	}
	return 0
}

// MasterOf returns the port of the master that serves key's hash slot.
func (c *Cluster) MasterOf(key string) (int, error) {
	port := c.anyPort()
	out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "cluster", "keyslot", key).Output()
	if err != nil {
		return 0, err
	}
	slot, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("cluster keyslot: %q", out)
	}
	out, err = exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "cluster", "nodes").Output()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && a <= slot && slot <= b {
				addr, _, _ := strings.Cut(f[1], "@")
				return strconv.Atoi(portOf(addr))
			}
		}
	}
	return 0, fmt.Errorf("no master serves slot %d", slot)
}

// Kill kills the node on port with SIGKILL (no shutdown, no save).
func (c *Cluster) Kill(port int) {
	c.mu.Lock()
	cmd := c.nodes[port]
	delete(c.nodes, port)
	c.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Restart starts again the node on port that Kill killed, on its data
// (a killed master comes back as a replica of the node that took over),
// and waits until it serves and its replication is in sync.
func (c *Cluster) Restart(port int) error {
	c.mu.Lock()
	args := c.args[port]
	c.mu.Unlock()
	if args == nil {
		return fmt.Errorf("no node was started on port %d", port)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		return err
	}
	c.mu.Lock()
	c.nodes[port] = cmd
	c.mu.Unlock()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "info", "replication").Output()
		if bytes.Contains(out, []byte("master_link_status:up")) || bytes.Contains(out, []byte("state=online")) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restarted node %s did not resume replication within 30s", addr)
}

// WaitOK waits until a surviving node reports every slot served again
// (after a failover), at most timeout.
func (c *Cluster) WaitOK(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		var ports []int
		for p := range c.nodes {
			ports = append(ports, p)
		}
		c.mu.Unlock()
		ok := len(ports) > 0
		for _, p := range ports {
			out, _ := exec.CommandContext(ctx, "redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(p), "cluster", "info").Output()
			ok = ok && bytes.Contains(out, []byte("cluster_state:ok"))
		}
		if ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cluster not ok %v after a failover", timeout)
}

// Stop kills every node.
func (c *Cluster) Stop() {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[int]*exec.Cmd{}
	c.mu.Unlock()
	for _, cmd := range nodes {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// clusterPort finds a free port whose cluster bus port (+10000) is free
// too.
func clusterPort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port+10000 > 65535 {
			continue
		}
		if b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err == nil {
			b.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port pair for a cluster node")
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server did not start listening on %s within 10s", addr)
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
