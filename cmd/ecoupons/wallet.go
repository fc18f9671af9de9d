package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
)

// Exit codes of `ecoupons wallet`: 0 success, 1 failure, 2 bad usage;
// `get` also exits 3 when the server answers with an error status, and
// `get` exits 4 when a spending limit refused a payment.
const (
	exitFailure = 1
	exitUsage   = 2
	exitHTTP    = 3
	exitLimit   = 4
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wallet",
		Usage: "<init|register|book|balance|get|device|delegate|import|reclaim|revoke|proxy|limit|receipts|office> … [--dir DIR]",
		Short: "The ecoupons wallet: keys, books, and paying 402s",
		Long: `
A wallet lives in a directory (--dir, default $ECOUPONS_WALLET or ~/.ecoupons):

  ecoupons wallet init
  ecoupons wallet register --broker https://broker.example
  ecoupons wallet book new --vendor news.example --lanes 8 --length 4096
  ecoupons wallet get https://news.example/premium/article.html
  ecoupons wallet limit set --max 1.00 --per 24h   (optional: --host news.example)
  ecoupons wallet book list                        (state, lanes used/free, value left)

get and proxy pay from the funded book with the most value left, and from
the next when a gate refuses one; get --book ID pays from one book.

Environment: $ECOUPONS_WALLET (the directory), $ECOUPONS_PASSPHRASE_FILE,
$ECOUPONS_PIN (smart card), $ECOUPONS_LOCK_WAIT (how long to wait for a
book's lanes another process holds, e.g. a running proxy; default 10s).

Exit codes: 0 success, 1 failure, 2 bad usage, 3 (get) the server answered
with an error status after payment, 4 (get) a spending limit refused the
payment.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("dir", "", "wallet directory (default $ECOUPONS_WALLET or ~/.ecoupons)")
			cmd.PersistentFlags().String("passphrase-file", "", "file holding the passphrase of the wallet's key (default $ECOUPONS_PASSPHRASE_FILE; at init: encrypt the new key with it)")
			cmd.PersistentFlags().StringSlice("vendor-host", nil, "get, proxy: a host that belongs to the vendor though not under its name (repeatable); the wallet pays only the vendor's own host, its subdomains and loopback otherwise")
			cmd.PersistentFlags().Bool("json", false, "print results and errors as JSON, for scripts (device, delegate and get print documents and bodies as they are)")
			cmd.AddCommand(walletInitCmd(), walletRegisterCmd(), walletBookCmd(), walletBalanceCmd(), walletGetCmd(),
				walletDeviceCmd(), walletDelegateCmd(), walletImportCmd(), walletReclaimCmd(), walletRevokeCmd(), walletProxyCmd(), walletLimitCmd(), walletReceiptsCmd(),
				walletOfficeCmd())
		},
	})
}

// walletErr carries an exit code.
type walletErr struct {
	code int
	err  error
}

func (e walletErr) Error() string { return e.err.Error() }

// jsonOutput reports whether --json was given.
func jsonOutput(cmd *cobra.Command) bool {
	j, _ := cmd.Flags().GetBool("json")
	return j
}

// report prints a command's result: human, or v as JSON under --json.
func report(cmd *cobra.Command, v map[string]any, human string) error {
	if jsonOutput(cmd) {
		return printJSON(v)
	}
	fmt.Println(human)
	return nil
}

// printJSON writes v to stdout as one JSON document.
func printJSON(v any) error {
	e := json.NewEncoder(os.Stdout)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func walletDir(cmd *cobra.Command) string {
	if d, _ := cmd.Flags().GetString("dir"); d != "" {
		return d
	}
	if d := os.Getenv("ECOUPONS_WALLET"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".ecoupons")
}

// run wraps a subcommand: errors go to stderr with their exit code.
func run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) {
	return func(cmd *cobra.Command, args []string) {
		if err := f(cmd, args); err != nil {
			code := exitFailure
			var we walletErr
			if errors.As(err, &we) {
				code = we.code
			} else if errors.Is(err, wallet.ErrSpendLimit) {
				code = exitLimit
			}
			if jsonOutput(cmd) {
				json.NewEncoder(os.Stderr).Encode(map[string]any{"error": err.Error(), "exit": code})
			} else {
				// The wallet package's errors begin "wallet: ", which the
				// command's own prefix already says.
				fmt.Fprintln(os.Stderr, "ecoupons wallet:", strings.TrimPrefix(err.Error(), "wallet: "))
			}
			os.Exit(code)
		}
	}
}

// keyOptions reads how to unlock the wallet's key: --passphrase-file (or
// $ECOUPONS_PASSPHRASE_FILE) and $ECOUPONS_PIN for a smart card.
func keyOptions(cmd *cobra.Command) (wallet.KeyOptions, error) {
	o := wallet.KeyOptions{PIN: os.Getenv("ECOUPONS_PIN")}
	f, _ := cmd.Flags().GetString("passphrase-file")
	if f == "" {
		f = os.Getenv("ECOUPONS_PASSPHRASE_FILE")
	}
	if f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return o, walletErr{exitUsage, fmt.Errorf("--passphrase-file: %w", err)}
		}
		if o.Passphrase = bytes.TrimRight(b, "\r\n"); len(o.Passphrase) == 0 {
			return o, walletErr{exitUsage, fmt.Errorf("--passphrase-file %s is empty", f)}
		}
	}
	return o, nil
}

// loadWallet opens the wallet of --dir, unlocking its key.
func loadWallet(cmd *cobra.Command) (*wallet.Wallet, error) {
	o, err := keyOptions(cmd)
	if err != nil {
		return nil, err
	}
	dir := walletDir(cmd)
	if err := checkWalletDir(dir); err != nil {
		return nil, err
	}
	if v := os.Getenv("ECOUPONS_LOCK_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, walletErr{exitUsage, fmt.Errorf("$ECOUPONS_LOCK_WAIT %q: a duration such as 30s or 2m", v)}
		}
		wallet.SetLockWait(d)
	}
	w, err := wallet.LoadWith(dir, o)
	if errors.Is(err, wallet.ErrNoPIN) {
		err = fmt.Errorf("%w (set $ECOUPONS_PIN, or pin-source=FILE in the URI)", err)
	}
	if err == nil && w.Config.KeyURI == "" {
		warnKeyFile(dir)
	}
	return w, err
}

func walletInitCmd() *cobra.Command {
	c := &cobra.Command{Use: "init [--passphrase-file F | --smart-card pkcs11:URI]", Short: "Create a wallet: a signing key and an encryption key", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			o, err := keyOptions(cmd)
			if err != nil {
				return err
			}
			o.SmartCard, _ = cmd.Flags().GetString("smart-card")
			if o.SmartCard != "" && len(o.Passphrase) > 0 {
				return walletErr{exitUsage, errors.New("--smart-card and --passphrase-file exclude each other: the card's PIN protects its key")}
			}
			w, err := wallet.InitWith(walletDir(cmd), o)
			if err != nil {
				return err
			}
			return report(cmd, map[string]any{"dir": w.Dir, "key": w.PublicKey().Hash().ID(), "smart_card": w.Config.KeyURI != ""},
				fmt.Sprintf("wallet created in %s\nkey %s", w.Dir, w.PublicKey().Hash()))
		})}
	c.Flags().String("smart-card", "", "use this existing key on a smart card (pkcs11: URI; PIN from pin-source or $ECOUPONS_PIN) instead of a key file")
	return c
}

// brokerCall sends a signed request to the wallet's broker.
// brokerRefusal is an answer of the broker other than 2xx.
type brokerRefusal struct {
	method, path string
	status       int
	code, reason string // the broker's {"error", "reason"}, when it sent them
	body         string
}

func (e *brokerRefusal) Error() string {
	return fmt.Sprintf("broker: %s %s: %d %s", e.method, e.path, e.status, e.body)
}

// decided reports whether the broker refused the request for what it is
// (4xx other than an authentication failure), rather than failing to
// answer it: a decided refusal will not change by retrying.
func (e *brokerRefusal) decided() bool {
	return e.status/100 == 4 && e.status != http.StatusUnauthorized && e.status != http.StatusTooManyRequests
}

// fundBook registers an owned book at the broker and keeps its book
// certificate, or records the broker's refusal. It returns the amount
// held and its currency.
func fundBook(w *wallet.Wallet, sb *coupons.SignedBook) (held, currency string, err error) {
	var out struct{ Book, Held, Currency, Certificate string }
	if err := brokerCall(w, "POST", "/v1/books", spki.Transport(sb.Sexp()), &out); err != nil {
		var ref *brokerRefusal
		if errors.As(err, &ref) && ref.decided() {
			why := ref.code + ": " + ref.reason
			if ref.code == "" {
				why = ref.body
			}
			if merr := w.MarkRefused(sb.Book.ID(), why); merr != nil {
				return "", "", merr
			}
			face, _ := coupons.MulAmount(uint64(sb.Book.Lanes)*uint64(sb.Book.Length), sb.Book.Unit)
			id := sb.Book.ID()
			return "", "", walletErr{exitFailure, fmt.Errorf("the broker refused the book (%s): its face value is %s %s; it is kept but will never be spent (remove it: ecoupons wallet book rm %s)",
				why, coupons.FormatAmount(face), sb.Book.Currency, wallet.BookID(id)[:12])}
		}
		id := sb.Book.ID()
		return "", "", fmt.Errorf("the book is kept but not funded yet, so it will not be spent; retry with 'ecoupons wallet book fund %s': %w", wallet.BookID(id)[:12], err)
	}
	x, err := spki.Parse([]byte(out.Certificate))
	if err != nil {
		return "", "", fmt.Errorf("the broker's book certificate: %w", err)
	}
	cert, err := spki.ParseSignedCert(x)
	if err != nil {
		return "", "", fmt.Errorf("the broker's book certificate: %w", err)
	}
	if err := w.SaveFunding(sb.Book.ID(), cert); err != nil {
		return "", "", err
	}
	return out.Held, out.Currency, nil
}

func brokerCall(w *wallet.Wallet, method, path string, in any, out any) error {
	return brokerCallAs(w, w.Key, method, path, in, out)
}

// brokerCallAs is brokerCall signed by key (an anonymous book's own key).
func brokerCallAs(w *wallet.Wallet, key crypto.Signer, method, path string, in any, out any) error {
	if w.Config.Broker == "" {
		return errors.New("this wallet is not registered at a broker (run: ecoupons wallet register --broker URL)")
	}
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	default:
		body, _ = json.Marshal(v)
	}
	req, err := http.NewRequest(method, strings.TrimRight(w.Config.Broker, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	bk, err := w.BrokerPublicKey()
	if err != nil {
		return err
	}
	if err := brokerapi.SignRequest(req, body, key, bk.Hash(), time.Now()); err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		e := &brokerRefusal{method: method, path: path, status: resp.StatusCode, body: string(bytes.TrimSpace(raw))}
		var pe struct{ Error, Reason string }
		if json.Unmarshal(raw, &pe) == nil {
			e.code, e.reason = pe.Error, pe.Reason
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func walletRegisterCmd() *cobra.Command {
	c := &cobra.Command{Use: "register --broker URL", Short: "Open an account at a broker and get a user certificate", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			url, _ := cmd.Flags().GetString("broker")
			currency, _ := cmd.Flags().GetString("currency")
			switchCur, _ := cmd.Flags().GetBool("switch-currency")
			if url == "" {
				return walletErr{exitUsage, errors.New("--broker URL is required")}
			}
			if url, err = checkBrokerURL("--broker", url); err != nil {
				return walletErr{exitUsage, err} // the operator's check: one message for both
			}
			old := w.Config.Currency
			if currency == "" {
				currency = cmp.Or(old, "EUR")
			}
			currency = strings.ToUpper(currency)
			if err := coupons.CheckCurrency(currency); err != nil {
				return walletErr{exitUsage, fmt.Errorf("--currency: %w", err)}
			}
			switching := old != "" && old != currency
			if switching && !switchCur {
				return walletErr{exitUsage, fmt.Errorf("this wallet is registered in %s: --currency %s would switch its new books, limits and balance to %s "+
					"(books already made stay in %s). Add --switch-currency to do so, or keep %s in another wallet (--dir)", old, currency, currency, old, currency)}
			}
			bk, err := fetchBrokerKey(context.Background(), url)
			if err != nil {
				return err
			}
			prev := w.Config
			w.Config.Broker, w.Config.BrokerKey, w.Config.Currency = url, string(spki.Advanced(bk.Sexp())), currency
			var out struct{ Account, Certificate string }
			if err := brokerCall(w, "POST", "/v1/users", map[string]string{"currency": currency}, &out); err != nil {
				if switching {
					return fmt.Errorf("the broker did not open a %s account for this key (%w): the wallet stays in %s; "+
						"to pay in %s, make another wallet (ecoupons wallet init --dir DIR) and register it with --currency %s", currency, err, old, currency, currency)
				}
				return err
			}
			w.Config.Account, w.Config.UserCert = out.Account, out.Certificate
			if switching {
				// A broker that keeps one currency per key registers the
				// account but lists it nowhere: then keep the old config.
				if err := checkAccountListed(w, out.Account, currency); err != nil {
					w.Config = prev
					return err
				}
			}
			if err := w.SaveConfig(); err != nil {
				return err
			}
			msg := fmt.Sprintf("registered at %s: account %s in %s (broker key %s)", url, out.Account, currency, bk.Hash().ID())
			if switching {
				msg += fmt.Sprintf("\nthe wallet now makes books in %s; its limits in %s do not count %s payments (set them: ecoupons wallet limit set --currency %s)",
					currency, old, currency, currency)
			}
			return report(cmd, map[string]any{"broker": url, "account": out.Account, "currency": currency, "broker_key": bk.Hash().String()}, msg)
		})}
	c.Flags().String("broker", "", "the broker's base URL (http://host:port)")
	c.Flags().String("currency", "", "ISO 4217 currency of the account (default: the wallet's, or EUR)")
	c.Flags().Bool("switch-currency", false, "register in --currency although the wallet is registered in another (its new books, limits and balance then use it)")
	return c
}

func walletBookCmd() *cobra.Command {
	book := &cobra.Command{Use: "book", Short: "Create, list, fund and remove coupon books"}
	newCmd := &cobra.Command{Use: "new --vendor V", Short: "Create a book, have the broker hold its face value", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			vendor, _ := cmd.Flags().GetString("vendor")
			lanes, _ := cmd.Flags().GetUint32("lanes")
			length, _ := cmd.Flags().GetUint32("length")
			unitS, _ := cmd.Flags().GetString("unit")
			days, _ := cmd.Flags().GetInt("days")
			if vendor == "" {
				return walletErr{exitUsage, errors.New("--vendor is required")}
			}
			if days < 1 {
				return walletErr{exitUsage, fmt.Errorf("--days %d: a book must last at least 1 day (it expires after --days days; the broker refuses a book already expired)", days)}
			}
			if lanes < 1 {
				return walletErr{exitUsage, errors.New("--lanes must be at least 1")}
			}
			if p, ok := nextPow2(length); !ok || length == 0 {
				return walletErr{exitUsage, fmt.Errorf("--length %d: lanes hold a power of two coupons, from 1 to 2^31", length)}
			} else if p != length {
				fmt.Fprintf(os.Stderr, "--length %d is not a power of two: using %d\n", length, p)
				length = p
			}
			unit, err := coupons.ParseAmount(unitS)
			if err != nil {
				return walletErr{exitUsage, err}
			}
			if anon, _ := cmd.Flags().GetBool("anonymous"); anon {
				spec, _ := cmd.Flags().GetString("denomination")
				return newAnonymousBook(cmd, w, vendor, spec, lanes, length, unit, days)
			}
			bk, err := w.BrokerPublicKey()
			if err != nil {
				return err
			}
			lastPct := -1
			b, sec, anchors, err := coupons.Create(coupons.Params{Vendor: vendor, Broker: bk.Hash(), Owner: w.PublicKey().Hash(),
				Lanes: lanes, Length: length, Currency: w.Config.Currency, Unit: unit, NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour)},
				func(done, total uint32) {
					if pct := int(done * 100 / total); pct != lastPct && total >= 16 {
						lastPct = pct
						fmt.Fprintf(os.Stderr, "\rhashing lanes: %3d%%", pct)
					}
				})
			if lastPct >= 0 {
				fmt.Fprintln(os.Stderr)
			}
			if err != nil {
				return walletErr{exitUsage, err}
			}
			sb, err := b.Sign(w.Key)
			if err != nil {
				return err
			}
			// Stored before the broker holds the money: a book paid for is
			// never a book lost.
			if err := w.SaveBook(sb, sec, anchors); err != nil {
				return err
			}
			held, currency, err := fundBook(w, sb)
			if err != nil {
				return err
			}
			id := sb.Book.ID()
			if jsonOutput(cmd) {
				return printJSON(map[string]any{"book": wallet.BookID(id), "id": wallet.BookID(id)[:12], "vendor": vendor,
					"lanes": lanes, "length": length, "unit": coupons.FormatAmount(unit), "currency": w.Config.Currency, "held": held, "state": string(wallet.BookFunded)})
			}
			// The id as book list, get --book and book rm take it.
			fmt.Printf("book %s for %s: %d lanes × %d coupons of %s %s; the broker holds %s %s\n",
				wallet.BookID(id)[:12], vendor, lanes, length, coupons.FormatAmount(unit), w.Config.Currency, held, currency)
			return nil
		})}
	newCmd.Flags().String("vendor", "", "the vendor (host name) the book is for")
	newCmd.Flags().Uint32("lanes", 4, "lanes (parallel requests, devices)")
	newCmd.Flags().Uint32("length", 1024, "coupons per lane (a power of two; others are rounded up to one)")
	newCmd.Flags().String("unit", "0.001", "value of one coupon")
	newCmd.Flags().Int("days", 30, "days until the book expires")
	newCmd.Flags().Bool("anonymous", false, "an anonymous book: owned by a key of its own, funded by the broker's blind signature (it debits the account without seeing the book)")
	newCmd.Flags().String("denomination", "", "with --anonymous: the denomination, by face value (e.g. 0.512) or a prefix of its id; the book's face value is the denomination's (--lanes follows from --length and --unit)")
	list := &cobra.Command{Use: "list", Short: "List the wallet's books: state, lanes used/free, value left (oldest first)", Args: cobra.NoArgs,
		Long: `Lists the wallet's books and imported grants, oldest first, with their state:

  pending   stored, the broker has not certified it yet: never spent ('book fund' retries)
  funded    the broker holds its value: spent, the one with the most value left first
  refused   the broker refused it (no funds, over the credit limit, …): never spent
  expired   past its expiry date: no gate takes it

USED/FREE counts the lanes this wallet spends that have coupons revealed / none
yet; LEFT is the value of the coupons left on them.`,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			return listBooks(cmd, w)
		})}
	fund := &cobra.Command{Use: "fund BOOK", Short: "Register an unfunded book at the broker again and keep its book certificate",
		Long: `Registers a book this wallet owns at the broker (again): the broker holds its face value
(pre-paid) or grants it within the account's credit limit (post-paid) and answers with the book
certificate every gate requires. 'book new' does this; use 'fund' when that step failed (the broker
was unreachable) or to retry a book the broker refused once the account can pay for it. BOOK is
(a prefix of) the ID 'book list' shows.`, Args: cobra.ExactArgs(1),
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			books, err := w.Books()
			if err != nil {
				return err
			}
			found, err := findBook(books, args[0])
			if err != nil {
				return err
			}
			if !found.Owned() {
				return walletErr{exitUsage, fmt.Errorf("book %s was granted to this wallet, not made by it: its owner funds it", args[0])}
			}
			if found.Anonymous() {
				if err := fundAnonymous(w, found.Holder.Book.Book.ID()); err != nil {
					return err
				}
				if jsonOutput(cmd) {
					return printJSON(map[string]any{"book": args[0], "anonymous": true, "status": "funded"})
				}
				fmt.Printf("anonymous book %s funded\n", args[0])
				return nil
			}
			held, currency, err := fundBook(w, found.Holder.Book)
			if err != nil {
				return err
			}
			if jsonOutput(cmd) {
				return printJSON(map[string]any{"book": args[0], "held": held, "currency": currency, "status": "funded"})
			}
			fmt.Printf("book %s funded: the broker holds %s %s\n", args[0], held, currency)
			return nil
		})}
	book.AddCommand(newCmd, list, fund, walletBookRmCmd(), walletBookRefundCmd())
	return book
}

func walletBalanceCmd() *cobra.Command {
	return &cobra.Command{Use: "balance", Short: "Show the account's balance at the broker", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Accounts []struct {
					Account   string `json:"account"`
					Currency  string `json:"currency"`
					Balance   string `json:"balance"`
					Available string `json:"available"`
				} `json:"accounts"`
			}
			if err := brokerCall(w, "GET", "/v1/balance", nil, &out); err != nil {
				return err
			}
			if jsonOutput(cmd) {
				return printJSON(out)
			}
			for _, a := range out.Accounts {
				fmt.Printf("%s  balance %s %s, available %s %s\n", a.Account, a.Balance, a.Currency, a.Available, a.Currency)
			}
			return nil
		})}
}

func walletGetCmd() *cobra.Command {
	c := &cobra.Command{Use: "get URL", Short: "Fetch a URL, paying its 402 from a book for its vendor", Args: cobra.ExactArgs(1),
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			verbose, _ := cmd.Flags().GetBool("verbose")
			outFile, _ := cmd.Flags().GetString("output")
			if _, err := checkURL("URL", args[0]); err != nil {
				return err
			}
			scheme, _ := cmd.Flags().GetString("scheme")
			if scheme == "auto" {
				scheme = wallet.SchemeAuto
			}
			if scheme != wallet.SchemeAuto && scheme != wallet.SchemeECoupon && scheme != wallet.SchemePayment {
				return walletErr{exitUsage, fmt.Errorf("--scheme %q: want auto, ecoupon or payment", scheme)}
			}
			probe, err := http.NewRequest("GET", args[0], nil)
			if err != nil {
				return err
			}
			if scheme != wallet.SchemeECoupon {
				probe.Header.Set("Accept-Payment", "ecoupon/charge, ecoupon/session")
			}
			resp, err := http.DefaultClient.Do(probe)
			if err != nil {
				return err
			}
			if resp.StatusCode == http.StatusPaymentRequired {
				resp.Body.Close()
				ch, err := wallet.ChallengeFromResponse(resp.Header, scheme)
				if err != nil {
					return err
				}
				if verbose {
					fmt.Fprintf(os.Stderr, "< 402 Payment Required: vendor %s, %d coupon(s) of %s %s (%s scheme)\n", ch.Vendor, ch.Price, ch.Unit, ch.Currency, ch.SchemeName())
				}
				only, _ := cmd.Flags().GetString("book")
				hosts := vendorHosts(cmd)
				tr, err := bookChooser(w, ch.Vendor, only, func(e *wallet.BookEntry) (*wallet.Transport, error) {
					t, err := openTransport(w, e, hosts)
					if err == nil {
						t.OnMeter = printMeterProgress
					}
					return t, err
				})
				if err != nil {
					return err
				}
				tr.Scheme = scheme
				defer tr.Close()
				timeout := 60 * time.Second
				if ch.Meter != "" {
					// A metered response streams as long as it is paid for:
					// its body has no deadline.
					timeout = 0
					fmt.Fprintf(os.Stderr, "> metered: %d coupon(s) per %s, a window of %d unit(s) paid at a time\n", ch.Price, ch.Meter, ch.Window)
				}
				if resp, err = (&http.Client{Transport: tr, Timeout: timeout}).Get(args[0]); err != nil {
					return err
				}
				if verbose {
					fmt.Fprintf(os.Stderr, "> paid %d coupon(s)\n", tr.Spent())
				}
			}
			defer resp.Body.Close()
			if verbose {
				fmt.Fprintf(os.Stderr, "< %s\n", resp.Status)
			}
			var dst io.Writer = os.Stdout
			if outFile != "" {
				f, err := os.Create(outFile)
				if err != nil {
					return err
				}
				defer f.Close()
				dst = f
			}
			if _, err := io.Copy(dst, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode >= 400 {
				return walletErr{exitHTTP, fmt.Errorf("%s: %s", args[0], resp.Status)}
			}
			return nil
		})}
	c.Flags().StringP("output", "o", "", "write the body to this file")
	c.Flags().BoolP("verbose", "v", false, "show the 402 exchange on stderr")
	c.Flags().String("book", "", "pay from this book only (a prefix of its id, from book list); default: the funded book with the most value left, then the next if a gate refuses it")
	c.Flags().String("scheme", "auto", "the 402 scheme to pay in: payment (the HTTP Payment scheme, method ecoupon), ecoupon, or auto (payment when the site offers it)")
	return c
}

// printMeterProgress shows on stderr what a metered response has been
// paid and, at its end, what it was charged.
func printMeterProgress(p wallet.MeterProgress) {
	switch {
	case p.Done:
		fmt.Fprintf(os.Stderr, "> metered response ended (%s): charged %d unit(s) of %s; paid %d coupon(s) for %d unit(s) in %d top-up(s); the lane's credit is now %d coupon(s)\n",
			p.End, p.Charged, p.Meter, p.Coupons, p.Units, p.TopUps, p.Credit)
	case p.Err != "":
		fmt.Fprintf(os.Stderr, "> top-up failed, the stream stops at what was paid: %s\n", p.Err)
	case p.TopUps > 0:
		fmt.Fprintf(os.Stderr, "> topped up: %d unit(s) of %s paid so far, %d coupon(s)\n", p.Units, p.Meter, p.Coupons)
	default:
		fmt.Fprintf(os.Stderr, "> paid a window of %d unit(s) of %s: %d coupon(s)\n", p.Units, p.Meter, p.Coupons)
	}
}

// laneRanges writes lanes as "0-3,7".
func laneRanges(lanes []uint32) string {
	if len(lanes) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(lanes); {
		j := i
		for j+1 < len(lanes) && lanes[j+1] == lanes[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, fmt.Sprint(lanes[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", lanes[i], lanes[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func writeOut(path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func walletDeviceCmd() *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Print this wallet's device identity, for an owner to delegate lanes to", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			name, _ := cmd.Flags().GetString("name")
			out, _ := cmd.Flags().GetString("output")
			code, _ := cmd.Flags().GetBool("pairing-code")
			d, err := w.Device(name)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "device %q, fingerprint %s: compare it with the owner's before they delegate\n", name, d.Fingerprint().ID())
			if code {
				return writeOut(out, append(spki.Transport(d.Sexp()), '\n'))
			}
			return writeOut(out, append(spki.AdvancedIndent(d.Sexp()), '\n'))
		})}
	c.Flags().String("name", "device", "a name for this device")
	c.Flags().Bool("pairing-code", false, "print the identity on one line, as the browser wallet shows it (delegate --to takes it as it is)")
	c.Flags().StringP("output", "o", "", "write to this file instead of stdout")
	return c
}

func walletDelegateCmd() *cobra.Command {
	c := &cobra.Command{Use: "delegate --to DEVICE --book ID --lanes A-B", Short: "Grant lanes of a book to a device (writes a grant file)", Args: cobra.NoArgs,
		Long: `Grant lanes of a book (or of a grant with --propagate) to a device.

Without --cap or --propagate the device gets the lanes whole (their seeds).
With --cap it gets portions: the chain value at coupon c of a lane, from
which it can compute coupons 1…c and nothing above, so the cap holds at every
gate, whatever its store. The cap in coupons (cap / the book's unit) fills the
lanes in order, each up to its length (or what this wallet holds of it); lanes
left with nothing are not granted. With --propagate (and no cap) the device
gets whole lanes as portions, so that it can grant portions on.

This wallet stops spending the lanes it granted. It can take a portion it
granted back at any time: ecoupons wallet reclaim BOOK LANES moves its own
cursor to the portion's end c, and its next payment on the lane, coupon c+1,
pays at the vendor for every coupon the device had not spent yet (nothing is
lost) and leaves the device nothing to spend there. Lanes granted whole cannot
be reclaimed: revoke the grant instead.`,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			to, _ := cmd.Flags().GetString("to")
			bookID, _ := cmd.Flags().GetString("book")
			lanesS, _ := cmd.Flags().GetString("lanes")
			out, _ := cmd.Flags().GetString("output")
			propagate, _ := cmd.Flags().GetBool("propagate")
			days, _ := cmd.Flags().GetInt("days")
			capS, _ := cmd.Flags().GetString("cap")
			if to == "" || lanesS == "" {
				return walletErr{exitUsage, errors.New("--to and --lanes are required")}
			}
			if days < 1 {
				return walletErr{exitUsage, fmt.Errorf("--days %d: a grant must last at least 1 day", days)}
			}
			var lo, hi uint32
			if _, err := fmt.Sscanf(lanesS, "%d-%d", &lo, &hi); err != nil {
				if _, err := fmt.Sscanf(lanesS, "%d", &lo); err != nil {
					return walletErr{exitUsage, fmt.Errorf("--lanes %q: use A-B or A", lanesS)}
				}
				hi = lo
			}
			var capNanos int64
			if capS != "" {
				if capNanos, err = coupons.ParseAmount(capS); err != nil {
					return walletErr{exitUsage, err}
				}
			}
			dev, err := deviceArg(to)
			if err != nil {
				return err
			}
			books, err := w.Books()
			if err != nil {
				return err
			}
			var matches []*wallet.BookEntry
			for i := range books {
				if books[i].NamedBy(bookID) {
					matches = append(matches, &books[i])
				}
			}
			if len(matches) != 1 {
				return walletErr{exitUsage, fmt.Errorf("%d books match --book %q: name exactly one (see: ecoupons wallet book list)", len(matches), bookID)}
			}
			entry := matches[0]
			g, err := entry.Holder.Issue(dev, lo, hi, delegation.GrantOptions{Propagate: propagate, Cap: capNanos,
				NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour)})
			if err != nil {
				return err
			}
			if err := w.MarkGranted(entry, g); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "lanes %s granted to %q (%s)\n", describeLanes(g, entry.Holder.Book.Book.Length), dev.Name, dev.Fingerprint().ID())
			// The broker keeps the certificate (not the sealed seeds), so that
			// the device shows in the back office and can be revoked there.
			if w.Config.Broker != "" {
				if err := brokerCall(w, "POST", "/v1/grants", map[string]string{"certificate": string(spki.Transport(g.Cert().Sexp())), "name": dev.Name}, nil); err != nil {
					fmt.Fprintf(os.Stderr, "warning: the broker did not record the grant (%v); it works, and you can still revoke it with: ecoupons wallet revoke GRANT\n", err)
				}
			}
			return writeOut(out, append(spki.Transport(g.Sexp()), '\n'))
		})}
	c.Flags().String("to", "", "the device: its identity file (from: ecoupons wallet device), or a pairing code ({…}, as the browser wallet shows it)")
	c.Flags().String("book", "", "the book (a prefix of its id in hex, from book list; optional with one book)")
	c.Flags().String("lanes", "", "lanes to grant, A-B")
	c.Flags().Bool("propagate", false, "let the device sub-delegate")
	c.Flags().Int("days", 7, "days the grant is valid")
	c.Flags().String("cap", "", "most the device may spend, in the book's currency: it gets portions of lanes (see above)")
	c.Flags().StringP("output", "o", "", "write the grant to this file instead of stdout")
	return c
}

// deviceArg reads delegate's --to: a pairing code (the device identity in
// transport form, {…}, as the browser wallet and device --pairing-code
// show it) or the name of a file holding the identity in any form.
func deviceArg(to string) (*delegation.Device, error) {
	doc := []byte(strings.TrimSpace(to))
	what := "pairing code"
	if !bytes.HasPrefix(doc, []byte("{")) {
		b, err := os.ReadFile(to)
		if err != nil {
			return nil, walletErr{exitUsage, fmt.Errorf("--to %s: neither a pairing code ({…}) nor a device file: %w", to, err)}
		}
		doc, what = b, "device "+to
	}
	x, err := spki.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	dev, err := delegation.ParseDevice(x)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return dev, nil
}

func walletImportCmd() *cobra.Command {
	return &cobra.Command{Use: "import GRANT", Short: "Verify and store a grant addressed to this wallet", Args: cobra.ExactArgs(1),
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			g, err := w.ImportGrant(b, time.Now())
			if err != nil {
				return err
			}
			ends := map[string]uint32{}
			for _, sl := range g.Lanes {
				ends[fmt.Sprint(sl.Lane)] = sl.End
				if sl.End == 0 {
					ends[fmt.Sprint(sl.Lane)] = g.Book.Book.Length
				}
			}
			return report(cmd, map[string]any{"vendor": g.Book.Book.Vendor, "lanes": ends},
				fmt.Sprintf("grant imported: %d lanes of a book for %s (%s)", len(g.Lanes), g.Book.Book.Vendor, describeLanes(g, g.Book.Book.Length)))
		})}
}

// describeLanes lists a grant's lanes and, for portions, their ends:
// "2-3" for whole lanes, "2 (coupons 1-64), 3 (coupons 1-5)" otherwise.
func describeLanes(g *delegation.Grant, length uint32) string {
	whole := true
	for _, sl := range g.Lanes {
		whole = whole && (sl.End == 0 || sl.End == length)
	}
	lo, hi := g.Lanes[0].Lane, g.Lanes[len(g.Lanes)-1].Lane
	if whole {
		if lo == hi {
			return fmt.Sprint(lo)
		}
		return fmt.Sprintf("%d-%d", lo, hi)
	}
	var parts []string
	for _, sl := range g.Lanes {
		parts = append(parts, fmt.Sprintf("%d (coupons 1-%d)", sl.Lane, sl.End))
	}
	return strings.Join(parts, ", ")
}

func walletReclaimCmd() *cobra.Command {
	return &cobra.Command{Use: "reclaim BOOK LANES", Short: "Take back lanes this wallet granted as portions (LANES: A-B or A)", Args: cobra.ExactArgs(2),
		Long: `Take back lanes this wallet granted as portions (delegate --cap).

BOOK is a prefix of the book's id in hex (book list); LANES is A-B or A. Each
lane becomes this wallet's again, its cursor at the end c of the portion it
granted: its next payment on the lane is coupon c+1, sent with a new lane open,
and pays at the vendor for the coupons the device had not spent (nothing is
lost); the device can spend nothing more there. Revoke the grant too if the
device should not open other lanes of it.`,
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			var lo, hi uint32
			if _, err := fmt.Sscanf(args[1], "%d-%d", &lo, &hi); err != nil {
				if _, err := fmt.Sscanf(args[1], "%d", &lo); err != nil {
					return walletErr{exitUsage, fmt.Errorf("LANES %q: use A-B or A", args[1])}
				}
				hi = lo
			}
			if lo > hi || hi-lo > 1<<16 {
				return walletErr{exitUsage, fmt.Errorf("LANES %q: an empty or too large range", args[1])}
			}
			books, err := w.Books()
			if err != nil {
				return err
			}
			var matches []*wallet.BookEntry
			for i := range books {
				if books[i].NamedBy(args[0]) {
					matches = append(matches, &books[i])
				}
			}
			if len(matches) != 1 {
				return walletErr{exitUsage, fmt.Errorf("%d books match %q: name exactly one (see: ecoupons wallet book list)", len(matches), args[0])}
			}
			var lanes []uint32
			for l := lo; l <= hi; l++ {
				lanes = append(lanes, l)
			}
			ends, err := w.Reclaim(matches[0], lanes)
			if err != nil {
				return err
			}
			var parts []string
			out := map[string]uint32{}
			for _, l := range lanes {
				parts = append(parts, fmt.Sprintf("%d (next coupon %d)", l, ends[l]+1))
				out[fmt.Sprint(l)] = ends[l] + 1
			}
			return report(cmd, map[string]any{"reclaimed": out},
				"reclaimed lanes "+strings.Join(parts, ", ")+": the next payment on each pays for the device's unspent coupons")
		})}
}

func walletRevokeCmd() *cobra.Command {
	c := &cobra.Command{Use: "revoke GRANT", Short: "Revoke a grant this wallet issued (with --key, every grant it gave that device)", Args: cobra.ExactArgs(1),
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			key, _ := cmd.Flags().GetBool("key")
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			x, err := spki.Parse(b)
			if err != nil {
				return err
			}
			g, err := delegation.ParseGrant(x)
			if err != nil {
				return err
			}
			if g.Blind != nil {
				// An anonymous book's grant: its own key revokes it, showing
				// the book (the broker knows no account behind it).
				if err := revokeAnonymousGrant(w, g, key); err != nil {
					return err
				}
			} else if err := brokerCall(w, "POST", "/v1/revoke", map[string]any{"certificate": string(spki.Transport(g.Cert().Sexp())), "key": key}, nil); err != nil {
				return err
			}
			return report(cmd, map[string]any{"revoked": true, "key": key},
				"revoked; gates refuse new lane opens under it once they fetch the broker's next list")
		})}
	c.Flags().Bool("key", false, "a lost device: also revoke every other grant this wallet gave it (those recorded at the broker)")
	return c
}

func walletOfficeCmd() *cobra.Command {
	return &cobra.Command{Use: "office", Short: "Print a sign-in link to the broker's back office (valid once, for a few minutes)", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			if w.Config.Broker == "" {
				return errors.New("this wallet is not registered at a broker (run: ecoupons wallet register --broker URL)")
			}
			bk, err := w.BrokerPublicKey()
			if err != nil {
				return err
			}
			link, err := brokerapi.OfficeLoginURL(w.Config.Broker, bk.Hash(), w.Key, time.Now())
			if err != nil {
				return err
			}
			return report(cmd, map[string]any{"url": link}, link)
		})}
}

// vendorHosts returns the --vendor-host flags, lower-case, without ports.
func vendorHosts(cmd *cobra.Command) []string {
	hs, _ := cmd.Flags().GetStringSlice("vendor-host")
	for i, h := range hs {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		hs[i] = strings.ToLower(strings.Trim(h, "[]"))
	}
	return hs
}

// openTransport opens the paying transport of a book or grant, under the
// wallet's spending limits, paying also for hosts (see Transport.Hosts).
func openTransport(w *wallet.Wallet, entry *wallet.BookEntry, hosts []string) (*wallet.Transport, error) {
	budget, err := w.Budget()
	if err != nil {
		return nil, err
	}
	t, err := entry.OpenTransport()
	if err != nil {
		return nil, err
	}
	t.Budget = budget
	t.Receipts = w.Receipts()
	t.Hosts = hosts
	return t, nil
}

func walletReceiptsCmd() *cobra.Command {
	c := &cobra.Command{Use: "receipts", Short: "Check the vendors' receipts of your payments", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			skew, _ := cmd.Flags().GetDuration("skew")
			checked, err := w.Receipts().Check(skew)
			if err != nil {
				return err
			}
			counts := map[wallet.ReceiptStatus]int{}
			for _, c := range checked {
				counts[c.Status]++
			}
			if jsonOutput(cmd) {
				if checked == nil {
					checked = []wallet.CheckedReceipt{}
				}
				if err := printJSON(checked); err != nil {
					return err
				}
			} else {
				for _, c := range checked {
					fmt.Printf("%s  %-13s %s  %s#%d  %d coupon(s)", c.At.UTC().Format(time.RFC3339), c.Status, c.URL, c.Lane, c.Index, c.Paid)
					if c.Reason != "" {
						fmt.Printf("  (%s)", c.Reason)
					}
					fmt.Println()
				}
				fmt.Printf("%d receipts: %d authenticated, %d pending, %d rejected, %d unverifiable\n", len(checked),
					counts[wallet.ReceiptAuthenticated], counts[wallet.ReceiptPending], counts[wallet.ReceiptRejected], counts[wallet.ReceiptUnverifiable])
			}
			if n := counts[wallet.ReceiptRejected]; n > 0 {
				return fmt.Errorf("%d receipt(s) do not match the payment they came with: keep them as evidence against the vendor", n)
			}
			return nil
		})}
	c.Flags().Duration("skew", 500*time.Millisecond, "how far the vendor's clock may be ahead of this machine's")
	return c
}

func walletLimitCmd() *cobra.Command {
	c := &cobra.Command{Use: "limit", Short: "Show the spending limits and what was spent against them", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			b, err := w.Budget()
			if err != nil {
				return err
			}
			ls, err := b.Limits()
			if err != nil {
				return err
			}
			type limitJSON struct {
				Host     string `json:"host"`
				Currency string `json:"currency"`
				Max      string `json:"max"`
				Per      string `json:"per"`
				Spent    string `json:"spent"`
			}
			out := []limitJSON{}
			if len(ls) == 0 && !jsonOutput(cmd) {
				fmt.Println("no spending limits")
			}
			for _, l := range ls {
				spent, err := b.Spent(l)
				if err != nil {
					return err
				}
				if jsonOutput(cmd) {
					out = append(out, limitJSON{l.Host, l.Currency, coupons.FormatAmount(l.Max), l.Period.String(), coupons.FormatAmount(spent)})
					continue
				}
				fmt.Printf("%s: %s spent in this period\n", l, coupons.FormatAmount(spent))
			}
			if jsonOutput(cmd) {
				return printJSON(out)
			}
			return nil
		})}
	limitFlags := func(c *cobra.Command, withMax bool) {
		c.Flags().String("host", "*", "host name the limit applies to; * for all hosts together")
		c.Flags().String("per", "24h", "period: fixed windows of this length (1h: on the hour, 24h: from midnight UTC, 168h: from Monday midnight UTC)")
		c.Flags().String("currency", "", "currency of the limit (default: the broker account's)")
		if withMax {
			c.Flags().String("max", "", "the most to spend per period, e.g. 0.50 (required)")
		}
	}
	parse := func(cmd *cobra.Command, w *wallet.Wallet, withMax bool) (wallet.Limit, error) {
		host, _ := cmd.Flags().GetString("host")
		per, _ := cmd.Flags().GetString("per")
		cur, _ := cmd.Flags().GetString("currency")
		if cur == "" {
			cur = w.Config.Currency
		}
		if cur == "" {
			return wallet.Limit{}, walletErr{exitUsage, errors.New("--currency is required (the wallet is not registered at a broker)")}
		}
		d, err := time.ParseDuration(per)
		if err != nil {
			return wallet.Limit{}, walletErr{exitUsage, fmt.Errorf("--per %q: %v", per, err)}
		}
		l := wallet.Limit{Host: host, Currency: cur, Period: d}
		if withMax {
			maxs, _ := cmd.Flags().GetString("max")
			if maxs == "" {
				return l, walletErr{exitUsage, errors.New("--max is required")}
			}
			if l.Max, err = coupons.ParseAmount(maxs); err != nil {
				return l, walletErr{exitUsage, fmt.Errorf("--max: %v", err)}
			}
		}
		if err := l.Check(); err != nil {
			return l, walletErr{exitUsage, err}
		}
		return l, nil
	}
	set := &cobra.Command{Use: "set --max AMOUNT [--host H] [--per 24h]", Short: "Set a spending limit (payments past it are refused)", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			l, err := parse(cmd, w, true)
			if err != nil {
				return err
			}
			b, err := w.Budget()
			if err != nil {
				return err
			}
			if err := b.Set(l); err != nil {
				return err
			}
			return report(cmd, map[string]any{"host": l.Host, "currency": l.Currency, "max": coupons.FormatAmount(l.Max), "per": l.Period.String()},
				fmt.Sprintf("limit set: %s", l))
		})}
	limitFlags(set, true)
	rm := &cobra.Command{Use: "rm [--host H] [--per 24h]", Short: "Remove a spending limit", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			l, err := parse(cmd, w, false)
			if err != nil {
				return err
			}
			b, err := w.Budget()
			if err != nil {
				return err
			}
			if l, err = limitToRemove(b, l, cmd.Flags().Changed("per")); err != nil {
				return err
			}
			ok, err := b.Remove(l)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("no limit per %s at %s in %s", l.Period, l.Host, l.Currency)
			}
			return report(cmd, map[string]any{"removed": true, "host": l.Host, "per": l.Period.String(), "currency": l.Currency, "max": coupons.FormatAmount(l.Max)},
				fmt.Sprintf("limit removed: %s", l))
		})}
	limitFlags(rm, false)
	c.AddCommand(set, rm)
	return c
}

// walletRouter pays any vendor the wallet holds a book or grant for, from
// its books in BooksFor's order; a request waits up to laneWait for a lane
// when all are in use.
func walletRouter(w *wallet.Wallet, hosts []string, laneWait time.Duration) (*wallet.Router, func()) {
	var opened []*wallet.Chooser
	r := &wallet.Router{Books: func(vendor string) (*wallet.Chooser, error) {
		c, err := bookChooser(w, vendor, "", func(e *wallet.BookEntry) (*wallet.Transport, error) {
			t, err := openTransport(w, e, hosts)
			if err == nil {
				t.LaneWait = laneWait
				t.OnMeter = printMeterProgress
			}
			return t, err
		})
		if err != nil {
			return nil, err
		}
		c.Refresh = func() ([]*wallet.BookEntry, error) { return w.BooksFor(vendor) }
		opened = append(opened, c)
		return c, nil
	}}
	return r, func() {
		for _, c := range opened {
			c.Close()
		}
	}
}

func walletProxyCmd() *cobra.Command {
	c := &cobra.Command{Use: "proxy --listen ADDR --upstream URL", Short: "Serve a local proxy that pays for clients that cannot (a browser, a player)", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			listen, _ := cmd.Flags().GetString("listen")
			upstream, _ := cmd.Flags().GetString("upstream")
			if _, err := checkURL("--upstream", upstream); err != nil {
				return err
			}
			u, err := url.Parse(upstream)
			if err != nil {
				return walletErr{exitUsage, fmt.Errorf("--upstream %q: %v", upstream, err)}
			}
			laneWait, _ := cmd.Flags().GetDuration("lane-wait")
			if laneWait <= 0 {
				laneWait = -1 // no wait
			}
			router, closeAll := walletRouter(w, vendorHosts(cmd), laneWait)
			defer closeAll()
			srv := &http.Server{Addr: listen, Handler: wallet.NewProxy(u, router), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(os.Stderr, "paying proxy for %s on http://%s (Ctrl-C to stop)\n", upstream, listen)
			errc := make(chan error, 1)
			go func() { errc <- srv.ListenAndServe() }()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			select {
			case err := <-errc:
				return err
			case <-sig:
				return srv.Close()
			}
		})}
	c.Flags().String("listen", "127.0.0.1:8088", "address to listen on (keep it on loopback: it pays for whoever connects)")
	c.Flags().String("upstream", "", "the paid site's base URL")
	c.Flags().Duration("lane-wait", wallet.DefaultLaneWait, "how long a request waits for a lane when all are in use by other requests; then 503 with Retry-After (0: no wait)")
	return c
}
