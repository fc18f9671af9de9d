// Package e2e runs ecoupons as separate processes of the built binary — a
// broker and two gates sharing Redis — with a wallet paying through both,
// restarts each process (SIGKILL) mid-run, and checks at the end that the
// broker's ledger paid the vendor exactly for the coupons the gates
// accepted; and kills the broker during a storm of redemptions.
package e2e

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/internal/testredis"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"go.step.sm/crypto/pemutil"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one ecoupons process running a Caddyfile.
type proc struct {
	t    *testing.T
	bin  string
	cfg  string
	addr string // an address it serves, to wait for
	dir  string
	cmd  *exec.Cmd
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "run", "--config", p.cfg, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(p.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(p.dir, "config"))
	log, _ := os.OpenFile(filepath.Join(p.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(p.dir, "log"))
	p.t.Fatalf("%s did not start:\n%s", p.cfg, b)
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func writeKey(t *testing.T, path string, k crypto.Signer) {
	block, err := pemutil.Serialize(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// env is the built binary and the broker's keys, in a temporary directory.
type env struct {
	t         *testing.T
	dir, bin  string
	keys      string // broker-init's directory
	admin     crypto.Signer
	brokerPub *spki.PublicKey
}

// setup builds the binary and runs broker-init.
func setup(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("the end-to-end tests build the binary and run processes")
	}
	e := &env{t: t, dir: t.TempDir()}
	e.bin = filepath.Join(e.dir, "ecoupons")
	build := exec.Command("go", "build", "-o", e.bin, "../cmd/ecoupons")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the binary: %v\n%s", err, out)
	}
	e.keys = filepath.Join(e.dir, "keys")
	if out, err := exec.Command(e.bin, "broker-init", "--dir", e.keys).CombinedOutput(); err != nil {
		t.Fatalf("broker-init: %v\n%s", err, out)
	}
	adminAny, err := pemutil.Read(filepath.Join(e.keys, "admin.pem"))
	if err != nil {
		t.Fatal(err)
	}
	e.admin = adminAny.(crypto.Signer)
	brokerPubX, _ := os.ReadFile(filepath.Join(e.keys, "broker.pub"))
	bx, _ := spki.Parse(brokerPubX)
	if e.brokerPub, err = spki.ParsePublicKey(bx); err != nil {
		t.Fatal(err)
	}
	return e
}

// proc makes a process serving body (Caddyfile directives) on addr.
func (e *env) proc(name, addr, body string) *proc {
	d := filepath.Join(e.dir, name)
	os.MkdirAll(d, 0o700)
	cfg := filepath.Join(d, "Caddyfile")
	os.WriteFile(cfg, []byte(fmt.Sprintf("{\n\tadmin off\n}\nhttp://%s {\n%s\n}\n", addr, body)), 0o644)
	return &proc{t: e.t, bin: e.bin, cfg: cfg, addr: addr, dir: d}
}

// broker makes the broker process, its ledger in dir/broker.db.
func (e *env) broker(addr string) *proc {
	return e.proc("broker", addr, fmt.Sprintf("\tecoupon_broker {\n\t\tkey %s\n\t\tdatabase %s\n\t\tadmin_key %s\n\t}",
		filepath.Join(e.keys, "broker.pem"), filepath.Join(e.dir, "broker.db"), filepath.Join(e.keys, "admin.pub")))
}

// TestEndToEndWithRestarts: a broker and two gates (one fleet: shared
// Redis and secret, in mode online, so every lane open is reserved at the
// broker) as separate processes, a wallet paying through both while each
// process is killed and restarted in turn; at the end the broker has paid
// the vendor exactly what the gates accepted and the ledger is consistent.
func TestEndToEndWithRestarts(t *testing.T) {
	env := setup(t)
	redisURL := testredis.Start(t)
	dir, keys, brokerPub := env.dir, env.keys, env.brokerPub
	_, vendorKey, _ := ed25519.GenerateKey(rand.Reader)
	writeKey(t, filepath.Join(keys, "vendor.pem"), vendorKey)

	brokerAddr, gate1Addr, gate2Addr := freeAddr(t), freeAddr(t), freeAddr(t)
	mk := env.proc
	brk := env.broker(brokerAddr)
	gateBody := fmt.Sprintf("\tecoupon /premium/* {\n\t\tvendor news.example\n\t\tbroker http://%s\n\t\tbroker_key %s\n\t\tvendor_key %s\n"+
		"\t\tstore redis %s\n\t\tsecret_file %s\n\t\tredeem_every 1s\n\t\tlane_rate -1\n\t\tmode online\n\t}\n\trespond /premium/* \"paid\"",
		brokerAddr, filepath.Join(keys, "broker.pub"), filepath.Join(keys, "vendor.pem"), redisURL, filepath.Join(keys, "gate.secret"))
	gates := []*proc{mk("gate1", gate1Addr, gateBody), mk("gate2", gate2Addr, gateBody)}
	brk.start()
	defer brk.kill()
	for _, g := range gates {
		g.start()
		defer g.kill()
	}

	// The user, the vendor and a book, through the broker's API.
	s := &stack.Stack{Broker: brokerAddr, AdminKey: env.admin, VendorKey: vendorKey, BrokerPub: brokerPub}
	alice := stack.NewKey()
	_, user, err := s.NewUser(alice, "3")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterVendor(); err != nil {
		t.Fatal(err)
	}
	owner, _, err := s.NewBook(alice, user, 4, 256)
	if err != nil {
		t.Fatal(err)
	}

	statePath := filepath.Join(dir, "wallet", "lanes.json")
	tr, err := wallet.OpenTransport(owner, statePath)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	pay := func(n int) {
		t.Helper()
		for k := 0; k < n; k++ {
			addr := []string{gate1Addr, gate2Addr}[k%2]
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + "/premium/x")
			if err != nil {
				continue // a gate being restarted
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				accepted++
			}
		}
	}
	pay(20)
	gates[0].kill() // a gate dies
	pay(10)
	gates[0].start()
	pay(10)
	brk.kill() // the broker dies while gates hold coupons to redeem
	pay(10)
	time.Sleep(1500 * time.Millisecond) // redemption attempts fail meanwhile
	brk.start()
	tr.Close() // the wallet restarts
	if tr, err = wallet.OpenTransport(owner, statePath); err != nil {
		t.Fatal(err)
	}
	pay(10)
	gates[1].kill()
	gates[1].start()
	pay(10)
	tr.Close()
	if accepted < 50 {
		t.Fatalf("only %d paid requests accepted", accepted)
	}

	want := coupons.FormatAmount(int64(accepted) * coupons.NanosPerUnit / 1000)
	if err := s.WaitPaid(want, 30*time.Second); err != nil {
		t.Fatalf("%v (accepted %d requests)", err, accepted)
	}
	// The ledger is consistent.
	brk.kill()
	db, err := broker.OpenSQLite(context.Background(), filepath.Join(dir, "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CheckInvariants(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Mode online: the lanes the wallet opened were reserved at the broker,
	// and hold what was not redeemed.
	id := owner.Book.Book.ID()
	res, err := db.Account(context.Background(), "reserve:"+hex.EncodeToString(id[:]))
	if err != nil || res.Balance <= 0 || res.Balance >= 4*256*coupons.NanosPerUnit/1000 {
		t.Fatalf("reserve account of the book: %+v %v", res, err)
	}
	t.Logf("%d paid requests through 2 gates with 4 restarts; the broker paid the vendor exactly %s EUR", accepted, want)
}
