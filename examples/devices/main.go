// Command devices runs the phone, laptop and smart-card scenario of
// examples/devices/README.md against a broker and a gate it starts in
// process.
package main

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/softhsm"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/wallet"
	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11" // the PKCS#11 key manager
)

func main() {
	dir := flag.String("dir", "", "directory for keys and databases (default: temporary)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "ecoupons-devices-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	card, kind, closeCard, err := cardKey(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devices:", err)
		os.Exit(1)
	}
	defer closeCard()
	fmt.Println("the smart card's key:", kind)
	if err := run(os.Stdout, *dir, freeAddr(), freeAddr(), card); err != nil {
		fmt.Fprintln(os.Stderr, "devices:", err)
		os.Exit(1)
	}
}

// cardKey makes the smart card's key: on a fresh SoftHSM2 token (PKCS#11,
// the key never leaves it) when SoftHSM2 is installed, else in memory. It
// says which in kind.
func cardKey(dir string) (card crypto.Signer, kind string, closeCard func(), err error) {
	uri, err := softhsm.NewToken(filepath.Join(dir, "softhsm"), "devices")
	if errors.Is(err, softhsm.ErrNotInstalled) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k, "an ECDSA P-256 key in memory (SoftHSM2 is not installed: apt-get install -y softhsm2 puts it on a PKCS#11 token)", func() {}, err
	}
	if err != nil {
		return nil, "", nil, err
	}
	km, err := kms.New(context.Background(), apiv1.Options{Type: apiv1.PKCS11, URI: uri})
	if err != nil {
		return nil, "", nil, err
	}
	resp, err := km.CreateKey(&apiv1.CreateKeyRequest{Name: "pkcs11:id=7003;object=card", SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err == nil {
		card, err = km.CreateSigner(&resp.CreateSignerRequest)
	}
	if err != nil {
		km.Close()
		return nil, "", nil, err
	}
	return card, "an ECDSA P-256 key on a SoftHSM2 token (PKCS#11; it never leaves the token)", func() { km.Close() }, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// device is a delegate: its signing key, its X25519 key and its grant.
type device struct {
	name   string
	holder *delegation.Holder
}

func delegate(owner *delegation.Holder, name string, signer crypto.Signer, lo, hi uint32) (*device, *delegation.Grant, error) {
	enc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	dev, err := delegation.NewDevice(name, signer, enc.PublicKey())
	if err != nil {
		return nil, nil, err
	}
	g, err := owner.Issue(dev, lo, hi, delegation.GrantOptions{NotAfter: time.Now().Add(7 * 24 * time.Hour)})
	if err != nil {
		return nil, nil, err
	}
	h, err := delegation.Accept(g, signer, enc, time.Now())
	if err != nil {
		return nil, nil, err
	}
	return &device{name: name, holder: h}, g, nil
}

// spend makes n paid requests from the device's lanes, par at a time.
func spend(s *stack.Stack, t *wallet.Transport, n, par int) error {
	c := &http.Client{Transport: t, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, par)
	for k := 0; k < n; k++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Get(c, "/premium/page.html", 200); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// run is the scenario: card is the smart card's signing key (a PKCS#11
// signer in the test when SoftHSM2 is installed).
func run(out io.Writer, dir, site, broker string, card crypto.Signer) error {
	say := func(f string, a ...any) { fmt.Fprintf(out, "- "+f+"\n", a...) }
	s, err := stack.Start(dir, site, broker, map[string]string{"premium/page.html": "paid page\n"}, []stack.Route{{Path: "/premium/*", Price: 1}})
	if err != nil {
		return err
	}
	defer s.Stop()
	laptopKey, phoneKey := stack.NewKey(), stack.NewKey()
	_, user, err := s.NewUser(laptopKey, "2")
	if err != nil {
		return err
	}
	if err := s.RegisterVendor(); err != nil {
		return err
	}
	owner, held, err := s.NewBook(laptopKey, user, 20, 64)
	if err != nil {
		return err
	}
	say("the laptop made a book of 20 lanes × 64 coupons; the broker holds %s EUR", held)
	phone, phoneGrant, err := delegate(owner, "phone", phoneKey, 0, 9)
	if err != nil {
		return err
	}
	cardDev, _, err := delegate(owner, "card", card, 10, 19)
	if err != nil {
		return err
	}
	say("lanes 0–9 delegated to the phone, 10–19 to the smart card")

	phoneT, err := wallet.NewTransport(phone.holder, 0, 1, 2, 3)
	if err != nil {
		return err
	}
	cardT, err := wallet.NewTransport(cardDev.holder, 10, 11, 12, 13)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var phoneErr, cardErr error
	wg.Add(2)
	go func() { defer wg.Done(); phoneErr = spend(s, phoneT, 12, 4) }()
	go func() { defer wg.Done(); cardErr = spend(s, cardT, 12, 4) }()
	wg.Wait()
	if err := errors.Join(phoneErr, cardErr); err != nil {
		return err
	}
	say("the phone and the card each paid 12 requests at the same time, 4 in flight each, on their own lanes")

	if err := s.Revoke(laptopKey, phoneGrant.Cert()); err != nil {
		return err
	}
	phoneNew, _ := wallet.NewTransport(phone.holder, 9)
	body, err := s.Get(&http.Client{Transport: phoneNew, Timeout: 10 * time.Second}, "/premium/page.html", 402)
	if err != nil || !strings.Contains(body, `"`+coupons.CodeRevoked+`"`) {
		return fmt.Errorf("the revoked phone's next lane open was not refused: %v %s", err, body)
	}
	say("the laptop revoked the phone; the phone's next lane open is refused")
	cardNew, _ := wallet.NewTransport(cardDev.holder, 19)
	if err := spend(s, cardNew, 3, 1); err != nil {
		return fmt.Errorf("the card after the phone's revocation: %w", err)
	}
	say("the card opens a new lane and keeps paying")
	return s.WaitPaid("0.027", 20*time.Second)
}
