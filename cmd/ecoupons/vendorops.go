package main

// ecoupons vendor init|register|statement|pending: the vendor's commands.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"
)

// vendorOpsHelp is the part of `ecoupons vendor --help` on the vendor's
// own commands.
const vendorOpsHelp = `
  ecoupons vendor init --dir /etc/ecoupons/vendor
  ecoupons vendor register --dir /etc/ecoupons/vendor --name news.example --currency EUR --broker https://broker.example
  ecoupons vendor statement --dir /etc/ecoupons/vendor --broker https://broker.example [--from D] [--to D] [--csv]
  ecoupons vendor pending --store /var/lib/ecoupons/spent.db

init makes the vendor's key: vendor.pem (the gate's vendor_key, mode 0600)
and vendor.pub (what the broker's operator registers: ecoupons broker
vendor add). register registers the vendor name for that key at the broker
(the currency is fixed then), keeps the broker's key as broker.pub (the
gate's broker_key) and prints the gate's directives. statement is the
vendor account's statement at the broker. pending lists what the gate's
store holds that the broker has not paid: lanes waiting to be redeemed, and
lanes the broker refused for good.

Exit codes: 0 success, 1 failure, 2 bad usage, 3 the broker refused.`

// addVendorCommands adds the vendor's subcommands to `ecoupons vendor`.
func addVendorCommands(cmd *cobra.Command) {
	signed := []*cobra.Command{vendorRegisterCmd(), vendorStatementCmd()}
	for _, c := range signed {
		c.Flags().String("key", "", "the vendor's private key (default DIR/vendor.pem)")
		c.Flags().String("passphrase-file", "", "file holding the passphrase of an encrypted --key")
		c.Flags().String("broker", "", "the broker's base URL (default $ECOUPONS_BROKER)")
		c.Flags().String("broker-key", "", "the broker's public key file; the broker must answer with it (default DIR/broker.pub when present)")
	}
	for _, c := range append(signed, vendorInitCmd()) {
		c.Flags().String("dir", ".", "the vendor's directory: vendor.pem, vendor.pub, broker.pub")
		c.Flags().Bool("json", false, "print results and errors as JSON")
		cmd.AddCommand(c)
	}
	cmd.AddCommand(vendorPendingCmd())
}

func vendorInitCmd() *cobra.Command {
	return &cobra.Command{Use: "init [--dir DIR]", Short: "Make the vendor's key: DIR/vendor.pem and DIR/vendor.pub", Args: cobra.NoArgs,
		Run: opsRun("ecoupons vendor init", func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("dir")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			keyFile, pubFile := filepath.Join(dir, "vendor.pem"), filepath.Join(dir, "vendor.pub")
			if _, err := os.Stat(keyFile); err == nil {
				return fmt.Errorf("%s exists; refusing to overwrite a key", keyFile)
			}
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			block, err := pemutil.Serialize(priv)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
				f.Close()
				return err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			pub, err := spki.NewPublicKey(priv.Public())
			if err != nil {
				return err
			}
			if err := os.WriteFile(pubFile, []byte(pubText(pub)+"\n"), 0o644); err != nil {
				return err
			}
			return opsPrint(cmd, map[string]any{"key": keyFile, "public_key": pubFile, "key_hash": pub.Hash().String()},
				fmt.Sprintf("vendor key %s (the gate's vendor_key), public key %s (hash %s)\nnext: ecoupons vendor register --dir %s --name YOUR.HOST --broker URL\n   or give %s to the broker's operator (ecoupons broker vendor add)",
					keyFile, pubFile, pub.Hash(), dir, pubFile))
		})}
}

// vendorClient is the signed client of a vendor's command.
func vendorClient(cmd *cobra.Command) (*opsClient, string, error) {
	flag := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	dir := flag("dir")
	key, keyFlag := flag("key"), "--key"
	if key == "" {
		key, keyFlag = filepath.Join(dir, "vendor.pem"), "--dir "+dir+": vendor.pem (make it with: ecoupons vendor init)"
	}
	bkFile := flag("broker-key")
	if bkFile == "" {
		if _, err := os.Stat(filepath.Join(dir, "broker.pub")); err == nil {
			bkFile = filepath.Join(dir, "broker.pub")
		}
	}
	base := flag("broker")
	if base == "" {
		base = os.Getenv("ECOUPONS_BROKER")
	}
	cl, err := newOpsClient(context.Background(), base, keyFlag, key, flag("passphrase-file"), bkFile)
	return cl, dir, err
}

func vendorRegisterCmd() *cobra.Command {
	c := &cobra.Command{Use: "register --name HOST --broker URL [--currency EUR]", Short: "Register the vendor name for the vendor's key at the broker", Args: cobra.NoArgs,
		Run: opsRun("ecoupons vendor register", func(cmd *cobra.Command, _ []string) error {
			name, _ := cmd.Flags().GetString("name")
			cur, _ := cmd.Flags().GetString("currency")
			if name == "" {
				return usage("--name is required: the vendor's host name, as the gate's vendor directive")
			}
			if err := coupons.CheckCurrency(cur); err != nil {
				return usage("--currency %q: %v", cur, err)
			}
			cl, dir, err := vendorClient(cmd)
			if err != nil {
				return err
			}
			var out struct{ Account, Certificate string }
			if err := cl.call(context.Background(), "POST", "/v1/vendors", map[string]string{"name": name, "currency": cur}, &out); err != nil {
				return err
			}
			// The broker's key, for the gate's broker_key.
			bkFile := filepath.Join(dir, "broker.pub")
			if _, err := os.Stat(bkFile); errors.Is(err, os.ErrNotExist) {
				if err := os.WriteFile(bkFile, []byte(pubText(cl.brokerKey)+"\n"), 0o644); err != nil {
					return err
				}
			}
			keyFile, _ := cmd.Flags().GetString("key")
			if keyFile == "" {
				keyFile = filepath.Join(dir, "vendor.pem")
			}
			return opsPrint(cmd, map[string]any{"name": name, "account": out.Account, "currency": cur, "broker": cl.base, "broker_key": bkFile},
				fmt.Sprintf("vendor %s registered at %s: account %s, paid in %s\nthe gate's directives:\n\n  ecoupon /premium/* {\n    vendor     %s\n    broker     %s\n    broker_key %s\n    vendor_key %s\n    unit       0.001 %s\n    price      1\n  }",
					name, cl.base, out.Account, cur, name, cl.base, abs(bkFile), abs(keyFile), cur))
		})}
	c.Flags().String("name", "", "the vendor's name: its host name, as the gate's vendor directive")
	c.Flags().String("currency", "EUR", "the vendor's currency, fixed at registration")
	return c
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func vendorStatementCmd() *cobra.Command {
	c := &cobra.Command{Use: "statement --broker URL [--from D] [--to D] [--csv]", Short: "The vendor account's statement at the broker", Args: cobra.NoArgs,
		Run: opsRun("ecoupons vendor statement", func(cmd *cobra.Command, _ []string) error {
			cl, _, err := vendorClient(cmd)
			if err != nil {
				return err
			}
			var bal struct {
				Accounts []struct{ Account, Currency, Balance string }
			}
			if err := cl.call(context.Background(), "GET", "/v1/balance", nil, &bal); err != nil {
				return err
			}
			name, _ := cmd.Flags().GetString("name")
			var accts []string
			for _, a := range bal.Accounts {
				if strings.HasPrefix(a.Account, "vendor:") && (name == "" || strings.HasPrefix(a.Account, "vendor:"+name+":")) {
					accts = append(accts, a.Account)
				}
			}
			switch {
			case len(accts) == 1:
				return fetchStatement(cmd, cl, accts[0])
			case len(accts) > 1:
				return usage("this key has several vendor accounts (%s): choose one with --name", strings.Join(accts, ", "))
			case name != "":
				return opsErr{opsExitFailure, fmt.Errorf("this key has no vendor account for %s at the broker", name)}
			}
			return opsErr{opsExitFailure, errors.New("this key has no vendor account at the broker (register: ecoupons vendor register)")}
		})}
	c.Flags().String("name", "", "the vendor name, when the key has several")
	statementFlags(c)
	return c
}

func vendorPendingCmd() *cobra.Command {
	c := &cobra.Command{Use: "pending (--store FILE | --redis URL [--cluster] [--prefix P]) [--limit N]", Short: "List what the broker has not paid yet: lanes waiting for redemption and lanes refused", Args: cobra.NoArgs,
		Run: opsRun("ecoupons vendor pending", func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("store")
			redisURL, _ := cmd.Flags().GetString("redis")
			prefix, _ := cmd.Flags().GetString("prefix")
			limit, _ := cmd.Flags().GetInt("limit")
			cluster, _ := cmd.Flags().GetBool("cluster")
			return vendorPending(cmd, path, redisURL, prefix, limit, cluster)
		})}
	c.Flags().String("store", "", "the gate's bolt file")
	c.Flags().String("redis", "", "the gates' Redis URL")
	c.Flags().Bool("cluster", false, "--redis names a Redis Cluster (the gates' store redis_cluster URL)")
	c.Flags().String("prefix", "", `the gates' Redis key prefix (default "ecoupons:")`)
	c.Flags().Int("limit", 10000, "the most lanes listed of each kind")
	c.Flags().Bool("json", false, "print results and errors as JSON")
	return c
}

// pendingLane is one line of `vendor pending`.
type pendingLane struct {
	Lane     string `json:"lane"`
	State    string `json:"state"`              // pending or refused
	Accepted uint32 `json:"accepted"`           // the highest coupon accepted (pending) or refused
	Redeemed uint32 `json:"redeemed"`           // the highest coupon the broker paid (pending)
	Unpaid   string `json:"unpaid,omitempty"`   // the value of the unpaid coupons (pending)
	Currency string `json:"currency,omitempty"` // of Unpaid
	Tries    uint32 `json:"tries,omitempty"`
	Code     string `json:"code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	At       string `json:"at,omitempty"`
}

// vendorPending lists the pending and refused lanes of a store.
func vendorPending(cmd *cobra.Command, path, redisURL, prefix string, limit int, cluster bool) error {
	ctx := context.Background()
	var s store.Store
	var err error
	switch {
	case (path == "") == (redisURL == ""):
		return usage("give one of --store FILE (the gate's bolt store) and --redis URL")
	case path != "":
		if _, err := os.Stat(path); err != nil {
			return opsErr{opsExitFailure, fmt.Errorf("no spent-state store at %s (the gate's `store bolt <path>`): %w", path, err)}
		}
		s, err = store.OpenBolt(path, store.BoltOptions{})
	default:
		s, err = openGatesRedis(ctx, redisURL, prefix, cluster)
	}
	if err != nil {
		if path != "" {
			err = fmt.Errorf("%w (a bolt file is locked by the gate that uses it: stop the gate, or read the gate's Redis)", err)
		}
		return err
	}
	defer s.Close()
	// Every pending lane, due or postponed: as seen from far ahead.
	ps, err := s.Pending(ctx, time.Now().Add(100*365*24*time.Hour), limit)
	if err != nil {
		return err
	}
	refs, err := s.Refusals(ctx, limit)
	if err != nil {
		return err
	}
	out := []pendingLane{}
	for _, p := range ps {
		l := pendingLane{Lane: p.ID.String(), State: "pending", Accepted: p.Index, Redeemed: p.Redeemed, Tries: p.Tries}
		if rec, err := s.Get(ctx, p.ID); err == nil && p.Index > p.Redeemed {
			if v, err := coupons.MulAmount(uint64(p.Index-p.Redeemed), rec.Meta.Unit); err == nil {
				l.Unpaid, l.Currency = coupons.FormatAmount(v), rec.Meta.Currency
			}
		}
		out = append(out, l)
	}
	for _, r := range refs {
		out = append(out, pendingLane{Lane: r.ID.String(), State: "refused", Accepted: r.Index, Code: r.Code, Reason: r.Message, At: r.At.UTC().Format(time.RFC3339)})
	}
	if len(out) == 0 {
		return opsPrint(cmd, map[string]any{"lanes": out}, "nothing pending: the broker paid every coupon the gate accepted")
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LANE\tSTATE\tCOUPON\tREDEEMED\tUNPAID\tDETAIL")
	for _, l := range out {
		if l.State == "pending" {
			value := ""
			if l.Unpaid != "" {
				value = " (" + l.Unpaid + " " + l.Currency + ")"
			}
			fmt.Fprintf(tw, "%s\tpending\t%d\t%d\t%d%s\t%d failed tries\n", l.Lane, l.Accepted, l.Redeemed, l.Accepted-l.Redeemed, value, l.Tries)
		} else {
			fmt.Fprintf(tw, "%s\trefused\t%d\t\t\t%s at %s: %s\n", l.Lane, l.Accepted, l.Code, l.At, l.Reason)
		}
	}
	tw.Flush()
	return opsPrint(cmd, map[string]any{"lanes": out}, b.String())
}
