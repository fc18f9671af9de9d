package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "demo",
		Usage: "[--script] [--site 127.0.0.1:8480] [--broker 127.0.0.1:8481] [--dir DIR]",
		Short: "Runs the whole ecoupons stack on embedded defaults and pays a few requests",
		Long: `
Starts, in this process, an ecoupons broker (SQLite) and a news site behind
the ecoupon gate (bolt store) with a free page, a paid article (2 coupons)
and an HLS stream whose segments cost 1 coupon each. Then it registers a
user and the vendor at the broker, funds the user, makes a coupon book,
delegates two lanes to a "phone" key, pays for the article and the stream,
waits until the gate has redeemed the coupons at the broker, revokes the
phone and shows its next lane open refused.

--script runs the scenario and exits: 0 only if every step worked.
Otherwise the servers keep running until interrupted.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Bool("script", false, "run the scenario unattended and exit")
			cmd.Flags().String("site", "127.0.0.1:8480", "address of the demo site")
			cmd.Flags().String("broker", "127.0.0.1:8481", "address of the demo broker")
			cmd.Flags().String("dir", "", "directory for keys and databases (default: a new temporary one)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
				d := &demo{site: fl.String("site"), broker: fl.String("broker"), dir: fl.String("dir"), out: os.Stdout}
				if err := d.run(fl.Bool("script")); err != nil {
					return 1, err
				}
				return 0, nil
			})
		},
	})
}

// demo is one run of the demo scenario.
type demo struct {
	site, broker, dir string
	out               io.Writer
	step              int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "%2d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func newKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func writePEM(path string, k crypto.Signer) error {
	block, err := pemutil.Serialize(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func writePub(path string, k crypto.Signer) (*spki.PublicKey, error) {
	p, err := spki.NewPublicKey(k.Public())
	if err != nil {
		return nil, err
	}
	return p, os.WriteFile(path, spki.Advanced(p.Sexp()), 0o644)
}

// call sends a signed request to the broker's API and decodes its answer.
func (d *demo) call(key crypto.Signer, method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://"+d.broker+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := broker.SignRequest(req, body, key, time.Now()); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (d *demo) callJSON(key crypto.Signer, method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	return d.call(key, method, path, b, out)
}

func (d *demo) run(script bool) error {
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "ecoupons-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		d.dir = dir
	}
	os.Setenv("XDG_DATA_HOME", filepath.Join(d.dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(d.dir, "config"))
	ctx := context.Background()

	// Keys.
	brokerKey, adminKey, vendorKey, aliceKey, phoneKey := newKey(), newKey(), newKey(), newKey(), newKey()
	for name, k := range map[string]crypto.Signer{"broker": brokerKey, "vendor": vendorKey} {
		if err := writePEM(filepath.Join(d.dir, name+".pem"), k); err != nil {
			return err
		}
	}
	brokerPub, err := writePub(filepath.Join(d.dir, "broker.pub"), brokerKey)
	if err != nil {
		return err
	}
	if _, err := writePub(filepath.Join(d.dir, "admin.pub"), adminKey); err != nil {
		return err
	}
	d.say("keys for the broker, its admin, the vendor news.example, the user alice and her phone in %s", d.dir)

	// The site.
	site := filepath.Join(d.dir, "site")
	files := map[string]string{
		"index.html":           "<h1>news.example</h1><p>Free front page. <a href=/premium/article.html>Premium article</a>, <a href=/stream/playlist.m3u8>stream</a>.</p>\n",
		"premium/article.html": "<h1>The premium article</h1><p>Paid with two e-coupons.</p>\n",
		"stream/playlist.m3u8": "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n#EXTINF:2.0,\nseg2.ts\n#EXTINF:2.0,\nseg3.ts\n#EXT-X-ENDLIST\n",
	}
	for i := 0; i < 4; i++ {
		files[fmt.Sprintf("stream/seg%d.ts", i)] = strings.Repeat(fmt.Sprintf("segment %d ", i), 200)
	}
	for name, body := range files {
		p := filepath.Join(site, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}

	// Caddy: the broker and the gated site.
	gate := func(price int) map[string]any {
		return map[string]any{"handler": "ecoupon", "vendor": "news.example", "broker": "http://" + d.broker,
			"broker_keys": []string{filepath.Join(d.dir, "broker.pub")}, "price": price,
			"vendor_key": filepath.Join(d.dir, "vendor.pem"), "redeem_every": "2s",
			"revocations": []string{"http://" + d.broker + "/v1/revocations"}, "revocations_every": "1s",
			"secret_file": filepath.Join(d.dir, "gate.secret"),
			"store":       map[string]any{"backend": "bolt", "path": filepath.Join(d.dir, "spent.db")}}
	}
	fileServer := map[string]any{"handler": "file_server", "root": site}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"broker": map[string]any{"listen": []string{d.broker}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "ecoupon_broker",
					"key_file": filepath.Join(d.dir, "broker.pem"), "database": filepath.Join(d.dir, "broker.db"),
					"admin_keys": []string{filepath.Join(d.dir, "admin.pub")}}}}}},
			"site": map[string]any{"listen": []string{d.site}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{
					map[string]any{"match": []any{map[string]any{"path": []string{"/premium/*"}}}, "handle": []any{gate(2), fileServer}, "terminal": true},
					map[string]any{"match": []any{map[string]any{"path": []string{"/stream/*.ts"}}}, "handle": []any{gate(1), fileServer}, "terminal": true},
					map[string]any{"handle": []any{fileServer}},
				}},
		}}},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}
	defer caddy.Stop()
	d.say("broker at http://%s, site at http://%s (gate: article 2 coupons, stream segments 1 coupon each)", d.broker, d.site)

	// Accounts at the broker.
	var user struct{ Account, Certificate string }
	if err := d.callJSON(aliceKey, "POST", "/v1/users", map[string]string{"currency": "EUR"}, &user); err != nil {
		return err
	}
	if err := d.callJSON(adminKey, "POST", "/v1/admin/topup", map[string]string{"account": user.Account, "amount": "5", "id": "demo-topup"}, nil); err != nil {
		return err
	}
	if err := d.callJSON(vendorKey, "POST", "/v1/vendors", map[string]string{"name": "news.example", "currency": "EUR"}, nil); err != nil {
		return err
	}
	d.say("alice registered (%s) and funded with 5 EUR; news.example registered as a vendor", user.Account)

	// A book, held at the broker.
	alicePub, _ := spki.NewPublicKey(aliceKey.Public())
	bk, sec, anchors, err := coupons.Create(coupons.Params{Vendor: "news.example", Broker: brokerPub.Hash(), Owner: alicePub.Hash(),
		Lanes: 4, Length: 256, Currency: "EUR", Unit: coupons.NanosPerUnit / 1000, NotAfter: time.Now().Add(30 * 24 * time.Hour)}, nil)
	if err != nil {
		return err
	}
	sb, err := bk.Sign(aliceKey)
	if err != nil {
		return err
	}
	var held struct{ Held string }
	if err := d.call(aliceKey, "POST", "/v1/books", spki.Transport(sb.Sexp()), &held); err != nil {
		return err
	}
	d.say("alice's book: 4 lanes × 256 coupons of 0.001 EUR for news.example; the broker holds its face value, %s EUR", held.Held)

	ux, err := spki.Parse([]byte(user.Certificate))
	if err != nil {
		return err
	}
	userCert, err := spki.ParseSignedCert(ux)
	if err != nil {
		return err
	}
	owner, err := delegation.NewOwner(sb, userCert, sec, anchors, aliceKey)
	if err != nil {
		return err
	}
	phoneEnc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	phoneDev, err := delegation.NewDevice("phone", phoneKey, phoneEnc.PublicKey())
	if err != nil {
		return err
	}
	grant, err := owner.Issue(phoneDev, 2, 3, delegation.GrantOptions{NotAfter: time.Now().Add(7 * 24 * time.Hour)})
	if err != nil {
		return err
	}
	phone, err := delegation.Accept(grant, phoneKey, phoneEnc, time.Now())
	if err != nil {
		return err
	}
	d.say("alice delegated lanes 2–3 to her phone (SPKI grant, seeds sealed with HPKE); the phone accepted them")

	aliceT, err := wallet.NewTransport(owner, 0, 1)
	if err != nil {
		return err
	}
	phoneT, err := wallet.NewTransport(phone, 2)
	if err != nil {
		return err
	}
	alice := &http.Client{Transport: aliceT, Timeout: 10 * time.Second}
	phoneC := &http.Client{Transport: phoneT, Timeout: 10 * time.Second}
	get := func(c *http.Client, path string, want int) (string, error) {
		resp, err := c.Get("http://" + d.site + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			return "", fmt.Errorf("GET %s: %d, want %d: %s", path, resp.StatusCode, want, bytes.TrimSpace(b))
		}
		return string(b), nil
	}
	if _, err := get(http.DefaultClient, "/", 200); err != nil {
		return err
	}
	if _, err := get(http.DefaultClient, "/premium/article.html", 402); err != nil {
		return err
	}
	d.say("the front page is free; the article answers 402 Payment Required to a plain client")
	if _, err := get(alice, "/premium/article.html", 200); err != nil {
		return err
	}
	d.say("alice's wallet answered the 402: opened lane 0 and paid 2 coupons; the article was served")
	if _, err := get(phoneC, "/stream/playlist.m3u8", 200); err != nil {
		return err
	}
	for i := 0; i < 4; i++ {
		if _, err := get(phoneC, fmt.Sprintf("/stream/seg%d.ts", i), 200); err != nil {
			return err
		}
	}
	d.say("the phone played the stream: a free playlist and 4 segments at 1 coupon each, on its own lane 2")
	spent := aliceT.Spent() + phoneT.Spent()

	// Redemption.
	deadline := time.Now().Add(20 * time.Second)
	want := coupons.FormatAmount(int64(spent) * (coupons.NanosPerUnit / 1000))
	for {
		var bal struct {
			Accounts []struct{ Balance string } `json:"accounts"`
		}
		if err := d.call(vendorKey, "GET", "/v1/balance", nil, &bal); err != nil {
			return err
		}
		if len(bal.Accounts) == 1 && bal.Accounts[0].Balance == want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the broker has not paid the vendor the %s EUR spent within 20s", want)
		}
		time.Sleep(300 * time.Millisecond)
	}
	d.say("the gate redeemed the %d coupons at the broker: news.example's balance is %s EUR", spent, want)

	// Revocation.
	if err := d.callJSON(aliceKey, "POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(grant.Cert().Sexp()))}, nil); err != nil {
		return err
	}
	// The broker publishes a new signed list; the gate fetches lists every
	// second: give it two.
	brokerList := func() (*delegation.Revocations, error) {
		resp, err := http.Get("http://" + d.broker + "/v1/revocations")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		x, err := spki.Parse(b)
		if err != nil {
			return nil, err
		}
		return delegation.ParseRevocations(x, brokerPub)
	}
	list, err := brokerList()
	if err != nil {
		return err
	}
	if !list.CertRevoked(grant.Cert().Cert.Hash()) {
		return errors.New("the broker's revocation list does not name the revoked grant")
	}
	time.Sleep(2500 * time.Millisecond)
	phoneT3, err := wallet.NewTransport(phone, 3)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: phoneT3, Timeout: 10 * time.Second}).Get("http://" + d.site + "/stream/seg0.ts")
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 402 || !strings.Contains(string(b), `"revoked"`) {
		return fmt.Errorf("the revoked phone's new lane was not refused: %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	d.say("alice revoked the phone's grant at the broker; the gate fetched the signed list and refused the phone's next lane open")
	if _, err := get(alice, "/premium/article.html", 200); err != nil {
		return err
	}
	d.say("alice's own lanes keep working")

	fmt.Fprintf(d.out, "\nEverything worked.\n")
	if script {
		return nil
	}
	fmt.Fprintf(d.out, `
The servers keep running (Ctrl-C to stop). Try:
  curl -i http://%[1]s/                          # free
  curl -i http://%[1]s/premium/article.html      # 402 with the ECoupon challenge
  curl -s http://%[2]s/v1/revocations            # the broker's signed revocation list
  curl -s http://%[2]s/v1/broker                 # the broker's public key
(The wallet command line, ecoupons wallet …, is not written yet.)
`, d.site, d.broker)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	return ctx.Err()
}
