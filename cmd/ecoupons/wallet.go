package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
)

// Exit codes of `ecoupons wallet`: 0 success, 1 failure, 2 bad usage;
// `get` also exits 3 when the server answers with an error status.
const (
	exitFailure = 1
	exitUsage   = 2
	exitHTTP    = 3
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wallet",
		Usage: "<init|register|book|balance|get> … [--dir DIR]",
		Short: "The ecoupons wallet: keys, books, and paying 402s",
		Long: `
A wallet lives in a directory (--dir, default $ECOUPONS_WALLET or ~/.ecoupons):

  ecoupons wallet init
  ecoupons wallet register --broker https://broker.example
  ecoupons wallet book new --vendor news.example --lanes 8 --length 4096
  ecoupons wallet get https://news.example/premium/article.html

Exit codes: 0 success, 1 failure, 2 bad usage, 3 (get) the server answered
with an error status after payment.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().String("dir", "", "wallet directory (default $ECOUPONS_WALLET or ~/.ecoupons)")
			cmd.AddCommand(walletInitCmd(), walletRegisterCmd(), walletBookCmd(), walletBalanceCmd(), walletGetCmd())
		},
	})
}

// walletErr carries an exit code.
type walletErr struct {
	code int
	err  error
}

func (e walletErr) Error() string { return e.err.Error() }

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
			fmt.Fprintln(os.Stderr, "ecoupons wallet:", err)
			code := exitFailure
			var we walletErr
			if errors.As(err, &we) {
				code = we.code
			}
			os.Exit(code)
		}
	}
}

func walletInitCmd() *cobra.Command {
	return &cobra.Command{Use: "init", Short: "Create a wallet: a signing key and an encryption key", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := wallet.Init(walletDir(cmd))
			if err != nil {
				return err
			}
			fmt.Printf("wallet created in %s\nkey %s\n", w.Dir, w.PublicKey().Hash())
			return nil
		})}
}

// brokerCall sends a signed request to the wallet's broker.
func brokerCall(w *wallet.Wallet, method, path string, in any, out any) error {
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
	if err := broker.SignRequest(req, body, w.Key, time.Now()); err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("broker: %s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func walletRegisterCmd() *cobra.Command {
	c := &cobra.Command{Use: "register --broker URL", Short: "Open an account at a broker and get a user certificate", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := wallet.Load(walletDir(cmd))
			if err != nil {
				return err
			}
			url, _ := cmd.Flags().GetString("broker")
			currency, _ := cmd.Flags().GetString("currency")
			if url == "" {
				return walletErr{exitUsage, errors.New("--broker URL is required")}
			}
			resp, err := http.Get(strings.TrimRight(url, "/") + "/v1/broker")
			if err != nil {
				return err
			}
			kb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			x, err := spki.Parse(kb)
			if err != nil {
				return fmt.Errorf("the broker's key: %w", err)
			}
			bk, err := spki.ParsePublicKey(x)
			if err != nil {
				return fmt.Errorf("the broker's key: %w", err)
			}
			w.Config.Broker, w.Config.BrokerKey, w.Config.Currency = url, string(spki.Advanced(bk.Sexp())), currency
			var out struct{ Account, Certificate string }
			if err := brokerCall(w, "POST", "/v1/users", map[string]string{"currency": currency}, &out); err != nil {
				return err
			}
			w.Config.Account, w.Config.UserCert = out.Account, out.Certificate
			if err := w.SaveConfig(); err != nil {
				return err
			}
			fmt.Printf("registered at %s: account %s (broker key %s)\n", url, out.Account, bk.Hash())
			return nil
		})}
	c.Flags().String("broker", "", "the broker's base URL")
	c.Flags().String("currency", "EUR", "ISO 4217 currency of the account")
	return c
}

func walletBookCmd() *cobra.Command {
	book := &cobra.Command{Use: "book", Short: "Create and list coupon books"}
	newCmd := &cobra.Command{Use: "new --vendor V", Short: "Create a book, have the broker hold its face value", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := wallet.Load(walletDir(cmd))
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
			unit, err := coupons.ParseAmount(unitS)
			if err != nil {
				return walletErr{exitUsage, err}
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
			var out struct{ Book, Held, Currency string }
			if err := brokerCall(w, "POST", "/v1/books", spki.Transport(sb.Sexp()), &out); err != nil {
				return err
			}
			fmt.Printf("book %s for %s: %d lanes × %d coupons of %s %s; the broker holds %s %s\n",
				out.Book, vendor, lanes, length, coupons.FormatAmount(unit), w.Config.Currency, out.Held, out.Currency)
			return nil
		})}
	newCmd.Flags().String("vendor", "", "the vendor (host name) the book is for")
	newCmd.Flags().Uint32("lanes", 4, "lanes (parallel requests, devices)")
	newCmd.Flags().Uint32("length", 1024, "coupons per lane (a power of two)")
	newCmd.Flags().String("unit", "0.001", "value of one coupon")
	newCmd.Flags().Int("days", 30, "days until the book expires")
	list := &cobra.Command{Use: "list", Short: "List the wallet's books", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := wallet.Load(walletDir(cmd))
			if err != nil {
				return err
			}
			books, err := w.Books()
			if err != nil {
				return err
			}
			for _, e := range books {
				b := e.Holder.Book.Book
				id := b.ID()
				fmt.Printf("%x…  %-20s %4d lanes × %-6d %s %s  until %s\n", id[:6], b.Vendor, b.Lanes, b.Length,
					coupons.FormatAmount(b.Unit), b.Currency, b.NotAfter.Format("2006-01-02"))
			}
			return nil
		})}
	book.AddCommand(newCmd, list)
	return book
}

func walletBalanceCmd() *cobra.Command {
	return &cobra.Command{Use: "balance", Short: "Show the account's balance at the broker", Args: cobra.NoArgs,
		Run: run(func(cmd *cobra.Command, _ []string) error {
			w, err := wallet.Load(walletDir(cmd))
			if err != nil {
				return err
			}
			var out struct {
				Accounts []struct{ Account, Currency, Balance, Available string } `json:"accounts"`
			}
			if err := brokerCall(w, "GET", "/v1/balance", nil, &out); err != nil {
				return err
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
			w, err := wallet.Load(walletDir(cmd))
			if err != nil {
				return err
			}
			verbose, _ := cmd.Flags().GetBool("verbose")
			outFile, _ := cmd.Flags().GetString("output")
			resp, err := http.Get(args[0])
			if err != nil {
				return err
			}
			if resp.StatusCode == http.StatusPaymentRequired {
				resp.Body.Close()
				ch, err := wallet.ParseChallenge(resp.Header.Get("WWW-Authenticate"))
				if err != nil {
					return err
				}
				if verbose {
					fmt.Fprintf(os.Stderr, "< 402 Payment Required: vendor %s, %d coupon(s) of %s %s\n", ch.Vendor, ch.Price, ch.Unit, ch.Currency)
				}
				entry, err := w.BookFor(ch.Vendor)
				if err != nil {
					return err
				}
				tr, err := wallet.OpenTransport(entry.Holder, entry.StatePath)
				if err != nil {
					return err
				}
				defer tr.Close()
				if resp, err = (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Get(args[0]); err != nil {
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
	return c
}
