package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/spki"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/stack"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "demo",
		Usage: "[--script] [--site 127.0.0.1:8480] [--broker 127.0.0.1:8481] [--dir DIR]",
		Short: "Runs the whole ecoupons stack on embedded defaults and pays a few requests",
		Long: `
Starts, in this process, an ecoupons broker (SQLite) and a news site behind
the ecoupon gate (bolt store) with a free page, a paid article (2 coupons),
an HLS stream whose segments cost 1 coupon each and a live ticker (server-
sent events behind reverse_proxy) metered at 1 coupon per 5 events. Then it
registers a user and the vendor at the broker, funds the user, makes a
coupon book, delegates two lanes to a "phone" key, pays for the article,
the stream and the ticker (topping up as it flows), waits until the gate
has redeemed the coupons at the broker, revokes the phone and shows its
next lane open refused.

The keys (broker.pem, admin.pem, vendor.pem and their .pub) and databases
stay in --dir (created if missing): with admin.pem the operator's commands
(ecoupons broker account topup …) work on the demo's broker.

--script runs the scenario and exits: 0 only if every step worked.
Otherwise the servers keep running until interrupted.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Bool("script", false, "run the scenario unattended and exit")
			cmd.Flags().String("site", "127.0.0.1:8480", "address of the demo site")
			cmd.Flags().String("broker", "127.0.0.1:8481", "address of the demo broker")
			cmd.Flags().String("dir", "", "directory for keys and databases (default: a new temporary one)")
			cmd.RunE = plain("ecoupons demo", func(fl caddycmd.Flags) (int, error) {
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

// demoMedia is the demo's stream: an HLS playlist of four MPEG-TS
// segments (H.264 and AAC, 2 s each; media/README.md says how they were
// made).
//
//go:embed media/playlist.m3u8 media/seg0.ts media/seg1.ts media/seg2.ts media/seg3.ts
var demoMedia embed.FS

// demoSite is the news site: a free page, a paid article, an HLS stream.
func demoSite() map[string]string {
	files := map[string]string{
		"index.html":           "<h1>news.example</h1><p>Free front page. <a href=/premium/article.html>Premium article</a>, <a href=/stream/playlist.m3u8>stream</a>.</p>\n",
		"premium/article.html": "<h1>The premium article</h1><p>Paid with two e-coupons.</p>\n",
	}
	for _, name := range []string{"playlist.m3u8", "seg0.ts", "seg1.ts", "seg2.ts", "seg3.ts"} {
		b, err := demoMedia.ReadFile("media/" + name)
		if err != nil {
			panic(err) // embedded at build time: cannot fail
		}
		files["stream/"+name] = string(b)
	}
	return files
}

func (d *demo) run(script bool) error {
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "ecoupons-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		d.dir = dir
	} else if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	ticker, err := startTicker()
	if err != nil {
		return err
	}
	defer ticker.Close()
	s, err := stack.Start(d.dir, d.site, d.broker, demoSite(), []stack.Route{{Path: "/premium/*", Price: 2}, {Path: "/stream/*.ts", Price: 1},
		{Path: "/live/*", Price: 1, Upstream: ticker.Addr().String(), Meter: map[string]any{"by": coupons.MeterEvents, "per": tickerPer, "window": tickerWindow}}})
	if err != nil {
		return err
	}
	defer s.Stop()
	d.say("keys for the broker, its admin and the vendor news.example in %s", d.dir)
	d.say("broker at http://%s, site at http://%s (gate: article 2 coupons, stream segments 1 coupon each, live ticker 1 coupon per %d events)", d.broker, d.site, tickerPer)

	aliceKey, phoneKey := stack.NewKey(), stack.NewKey()
	account, userCert, err := s.NewUser(aliceKey, "5")
	if err != nil {
		return err
	}
	if err := s.RegisterVendor(); err != nil {
		return err
	}
	d.say("alice registered (%s) and funded with 5 EUR; news.example registered as a vendor", account)

	owner, held, err := s.NewBook(aliceKey, userCert, 4, 256)
	if err != nil {
		return err
	}
	d.say("alice's book: 4 lanes × 256 coupons of 0.001 EUR for news.example; the broker holds its face value, %s EUR, and signed the book certificate every gate requires", held)

	phoneEnc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	phoneDev, err := delegation.NewDevice("phone", phoneKey, phoneEnc.PublicKey())
	if err != nil {
		return err
	}
	grant, err := owner.Issue(phoneDev, 2, 3, delegation.GrantOptions{Cap: 300 * (coupons.NanosPerUnit / 1000), NotAfter: time.Now().Add(7 * 24 * time.Hour)})
	if err != nil {
		return err
	}
	phone, err := delegation.Accept(grant, phoneKey, phoneEnc, time.Now())
	if err != nil {
		return err
	}
	end3, _, _ := phone.Portion(3)
	d.say("alice delegated 0.30 EUR of lanes 2–3 to her phone: an SPKI grant with lane 2 whole and a portion of lane 3 (coupons 1–%d: the chain value w_%d, sealed with HPKE), so the phone cannot spend more at any gate", end3, end3)

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
	if _, err := s.Get(http.DefaultClient, "/", 200); err != nil {
		return err
	}
	if _, err := s.Get(http.DefaultClient, "/premium/article.html", 402); err != nil {
		return err
	}
	d.say("the front page is free; the article answers 402 Payment Required to a plain client")
	if _, err := s.Get(alice, "/premium/article.html", 200); err != nil {
		return err
	}
	d.say("alice's wallet answered the 402: opened lane 0 and paid 2 coupons; the article was served")
	if _, err := s.Get(phoneC, "/stream/playlist.m3u8", 200); err != nil {
		return err
	}
	for i := 0; i < 4; i++ {
		if _, err := s.Get(phoneC, fmt.Sprintf("/stream/seg%d.ts", i), 200); err != nil {
			return err
		}
	}
	d.say("the phone played the stream: a free playlist and 4 segments at 1 coupon each, on its own lane 2")
	if err := d.liveTicker(s, aliceT); err != nil {
		return err
	}
	spent := aliceT.Spent() + phoneT.Spent()
	want := coupons.FormatAmount(int64(spent) * (coupons.NanosPerUnit / 1000))
	if err := s.WaitPaid(want, 20*time.Second); err != nil {
		return err
	}
	d.say("the gate redeemed the %d coupons at the broker: news.example's balance is %s EUR", spent, want)

	if err := s.Revoke(aliceKey, grant.Cert()); err != nil {
		return err
	}
	phoneT3, err := wallet.NewTransport(phone, 3)
	if err != nil {
		return err
	}
	body, err := s.Get(&http.Client{Transport: phoneT3, Timeout: 10 * time.Second}, "/stream/seg0.ts", 402)
	if err != nil {
		return fmt.Errorf("the revoked phone's new lane was not refused: %w", err)
	}
	if !strings.Contains(body, `"`+coupons.CodeRevoked+`"`) {
		return fmt.Errorf("the phone's lane open was refused, but not as revoked: %s", body)
	}
	d.say("alice revoked the phone's grant at the broker; the gate fetched the signed list and refused the phone's next lane open")
	body, err = s.Get(phoneC, "/stream/seg1.ts", 402)
	if err != nil {
		return fmt.Errorf("the revoked phone's open lane was not refused: %w", err)
	}
	if !strings.Contains(body, `"`+coupons.CodeRevoked+`"`) {
		return fmt.Errorf("the phone's open lane was refused, but not as revoked: %s", body)
	}
	d.say("and refused the phone's lane 2, already open: revocation reaches open lanes (no coupon accepted)")
	if _, err := s.Get(alice, "/premium/article.html", 200); err != nil {
		return err
	}
	d.say("alice's own lanes keep working")

	// A wallet on disk for the reader: registered, funded, with a book.
	walletDir := filepath.Join(d.dir, "wallet")
	wl, err := wallet.Init(walletDir)
	if err != nil {
		return err
	}
	acct, cert, err := s.NewUser(wl.Key, "2")
	if err != nil {
		return err
	}
	bk, err := s.MakeBook(wl.Key, 4, 256)
	if err != nil {
		return err
	}
	wl.Config = wallet.Config{Broker: "http://" + d.broker, BrokerKey: string(spki.Advanced(s.BrokerPub.Sexp())), Account: acct,
		Currency: "EUR", UserCert: string(spki.Transport(cert.Sexp()))}
	if err := wl.SaveConfig(); err != nil {
		return err
	}
	if err := wl.SaveBook(bk.Signed, bk.Secrets, bk.Anchors); err != nil {
		return err
	}
	if err := wl.SaveFunding(bk.Signed.Book.ID(), bk.Funding); err != nil {
		return err
	}
	self, _ := os.Executable()
	if strings.Contains(self, "go-build") {
		self = "go run ./cmd/ecoupons" // under go run, the binary is a temporary file
	}
	topup := fmt.Sprintf("%s broker account topup --dir %s --broker http://%s %s 5", self, d.dir, d.broker, acct)
	d.say("a wallet for you in %s: registered, funded with 2 EUR, with a book for news.example; the broker's admin key is %s, and this adds 5 EUR to the wallet:\n      %s",
		walletDir, filepath.Join(d.dir, "admin.pem"), topup)

	fmt.Fprintf(d.out, "\nEverything worked.\n")
	if script {
		return nil
	}
	fmt.Fprintf(d.out, `
The servers keep running (Ctrl-C to stop). In another terminal, try:

  export ECOUPONS_WALLET=%[3]s
  %[4]s wallet book list
  %[4]s wallet get -v http://%[1]s/premium/article.html
  %[4]s wallet get -o seg0.ts http://%[1]s/stream/seg0.ts
  %[4]s wallet balance
  %[4]s wallet office                                # a sign-in link to the broker's back office
  %[4]s wallet get http://%[1]s/live/ticks         # a metered event stream, topped up as it flows
  %[4]s wallet proxy --listen 127.0.0.1:8088 --upstream http://%[1]s &
  curl http://127.0.0.1:8088/premium/article.html      # a plain client, paid by the proxy
  curl -N http://127.0.0.1:8088/live/ticks?n=100      # the live ticker, streamed and paid by the proxy
  curl -i http://%[1]s/premium/article.html          # 402 with the ECoupon challenge
  curl -s http://%[2]s/v1/revocations                # the broker's signed revocation list
  %[5]s
  %[4]s broker account list --dir %[6]s --broker http://%[2]s
`, d.site, d.broker, walletDir, self, topup, d.dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	return nil
}

// The live ticker: server-sent events behind reverse_proxy, metered per
// tickerPer events with a window of tickerWindow units.
const (
	tickerPer    = 5
	tickerWindow = 2
	tickerEvents = 25 // in the scenario
)

// startTicker serves the live ticker on a loopback port: GET /live/ticks
// streams n events (?n=, default 25, at most 10000), one every 20 ms.
func startTicker() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 10000 {
			n = tickerEvents
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for k := 1; k <= n; k++ {
			if _, err := fmt.Fprintf(w, "id: %d\ndata: {\"tick\":%d,\"headline\":\"news.example live, update %d\"}\n\n", k, k, k); err != nil {
				return
			}
			rc.Flush()
			select {
			case <-time.After(20 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
	}))
	return ln, nil
}

// liveTicker reads the metered ticker through alice's wallet: every event
// arrives, the wallet tops up as the windows run out, and the unused part
// of the last window comes back as credit.
func (d *demo) liveTicker(s *stack.Stack, aliceT *wallet.Transport) error {
	var last wallet.MeterProgress
	aliceT.OnMeter = func(p wallet.MeterProgress) { last = p }
	defer func() { aliceT.OnMeter = nil }()
	body, err := s.Get(&http.Client{Transport: aliceT, Timeout: 30 * time.Second}, "/live/ticks", 200)
	if err != nil {
		return err
	}
	if got := strings.Count(body, "\ndata: "); got != tickerEvents || strings.Contains(body, coupons.NeedTopupEvent) {
		return fmt.Errorf("the live ticker gave %d events of %d (or a need-topup event reached the reader): %q", got, tickerEvents, body)
	}
	want := uint32((tickerEvents + tickerPer - 1) / tickerPer)
	if !last.Done || last.Charged != want || last.End != coupons.EndComplete {
		return fmt.Errorf("the live ticker's metering: %+v, want %d units charged", last, want)
	}
	d.say("alice's wallet read the live ticker (server-sent events behind reverse_proxy, 1 coupon per %d events, a window of %d): %d events, %d units charged; it topped up %d times as the windows ran out, and the %d coupon(s) paid beyond the stream came back to its lane as credit",
		tickerPer, tickerWindow, tickerEvents, last.Charged, last.TopUps, last.Credit)
	return nil
}
