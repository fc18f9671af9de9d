package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "broker",
		Usage: "<init|run|account|vendor|statement|thefts> …",
		Short: "Initialises, runs and operates an ecoupons broker",
		Long: `
  ecoupons broker init --dir /etc/ecoupons [--database postgres://…]
  ecoupons broker run  --dir /etc/ecoupons [--listen :8080] [--database …]

init writes into --dir (created if needed, files never overwritten):

  broker.pem   the broker's private key (Ed25519, PEM, mode 0600): the
               'key' of the ecoupon_broker directive
  broker.pub   its (public-key …): the 'broker_key' of every gate
  admin.pem    an administrator's private key (mode 0600)
  admin.pub    its (public-key …): the 'admin_key' of ecoupon_broker
  Caddyfile    a site serving the broker with these files

and creates the ledger: SQLite in --dir/broker.db, or the PostgreSQL
database of --database, migrated to the current schema.

run serves the broker's API (/v1/) and back office (/office/) on --listen,
over plain HTTP (put it behind TLS, or serve the Caddyfile with
'ecoupons run --config Caddyfile', which gets certificates), until
interrupted.
` + operatorHelp,
		CobraFunc: func(cmd *cobra.Command) {
			initCmd := &cobra.Command{Use: "init --dir DIR [--database URL]", Short: "Create the broker's keys, ledger and Caddyfile", Args: cobra.NoArgs,
				RunE: plain("ecoupons broker init", func(fl caddycmd.Flags) (int, error) {
					return brokerInit(fl.String("dir"), fl.String("database"), true)
				})}
			initCmd.Flags().String("dir", "", "directory for the keys (required)")
			initCmd.Flags().String("database", "", "PostgreSQL URL of the ledger (default: SQLite in DIR/broker.db)")
			runCmd := &cobra.Command{Use: "run --dir DIR [--listen ADDR] [--database URL]", Short: "Serve the broker until interrupted", Args: cobra.NoArgs,
				RunE: plain("ecoupons broker run", brokerRun)}
			runCmd.Flags().String("dir", "", "the directory of broker init (required)")
			runCmd.Flags().String("listen", "127.0.0.1:8080", "address to serve on")
			runCmd.Flags().String("database", "", "PostgreSQL URL of the ledger (default: SQLite in DIR/broker.db)")
			runCmd.Flags().Int64("fee", 0, "fee on redemptions, in basis points")
			cmd.AddCommand(initCmd, runCmd)
			addOperatorCommands(cmd)
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "broker-init",
		Usage: "--dir <directory>",
		Short: "Creates the keys of a new ecoupons broker (see: ecoupons broker init)",
		Long: `
Writes broker.pem, broker.pub, admin.pem and admin.pub into --dir, like
'ecoupons broker init', without creating the ledger or the Caddyfile.`,
		CobraFunc: func(cmd *cobra.Command) {
			// An older spelling of 'broker init', kept for scripts that
			// use it; not listed.
			cmd.Hidden = true
			cmd.Flags().String("dir", "", "directory for the keys (required)")
			cmd.RunE = plain("ecoupons broker-init", func(fl caddycmd.Flags) (int, error) {
				return brokerInit(fl.String("dir"), "", false)
			})
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "office-link",
		Usage: "--key <pem file> --broker <url> --broker-key <file>",
		Short: "Prints a sign-in link to a broker's back office, signed by a key",
		Long: `
Signs a one-time link to the back office of the broker at --broker with the
private key in --key (PEM): a vendor's key (the gate's vendor_key) shows the
vendor's revenue and redemptions, a user's key the user's accounts. The link
names the broker's key (--broker-key, its (public-key …) file: the gate's
broker_key), so that it works at that broker only, once, within its replay
window (5 minutes). Wallets have their own: ecoupons wallet office.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("key", "", "PEM file of the private key (required)")
			cmd.Flags().String("broker", "", "the broker's base URL (required)")
			cmd.Flags().String("broker-key", "", "the broker's public key file, (public-key …) in any form, e.g. broker.pub (required)")
			cmd.RunE = plain("ecoupons office-link", officeLink)
		},
	})
}

func officeLink(fl caddycmd.Flags) (int, error) {
	keyFile, base, brokerKeyFile := fl.String("key"), fl.String("broker"), fl.String("broker-key")
	if keyFile == "" || base == "" || brokerKeyFile == "" {
		return 2, errors.New("--key, --broker and --broker-key are required")
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return 2, fmt.Errorf("--broker %q must be an http(s) URL", base)
	}
	k, err := pemutil.Read(keyFile)
	if err != nil {
		return 1, fmt.Errorf("--key %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return 1, fmt.Errorf("--key %s holds no private key", keyFile)
	}
	// The broker's key comes from the operator, not from the URL: a link
	// signed for whatever key the URL answered could be replayed at the
	// broker that key belongs to.
	raw, err := os.ReadFile(brokerKeyFile)
	if err != nil {
		return 1, fmt.Errorf("--broker-key: %w", err)
	}
	bx, err := spki.Parse(raw)
	if err != nil {
		return 1, fmt.Errorf("--broker-key %s: %w", brokerKeyFile, err)
	}
	bk, err := spki.ParsePublicKey(bx)
	if err != nil {
		return 1, fmt.Errorf("--broker-key %s: %w", brokerKeyFile, err)
	}
	link, err := broker.OfficeLoginURL(base, bk.Hash(), signer, time.Now())
	if err != nil {
		return 1, err
	}
	fmt.Println(link)
	return 0, nil
}

// brokerInit writes the broker's keys into dir and, with full, creates
// its ledger (database, or SQLite in dir) and a Caddyfile.
func brokerInit(dir, database string, full bool) (int, error) {
	if dir == "" {
		return 2, errors.New("--dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 1, err
	}
	for _, name := range []string{"broker", "admin"} {
		pubFile := filepath.Join(dir, name+".pub")
		keyFile := filepath.Join(dir, name+".pem")
		if _, err := os.Stat(keyFile); err == nil {
			return 1, fmt.Errorf("%s exists; refusing to overwrite a key", keyFile)
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return 1, err
		}
		block, err := pemutil.Serialize(priv)
		if err != nil {
			return 1, err
		}
		f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return 1, err
		}
		if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
			f.Close()
			return 1, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return 1, err
		}
		f.Close()
		pub, err := spki.NewPublicKey(priv.Public())
		if err != nil {
			return 1, err
		}
		if err := os.WriteFile(pubFile, append(spki.Advanced(pub.Sexp()), '\n'), 0o644); err != nil {
			return 1, err
		}
		fmt.Printf("%-6s key %s, public key %s (hash %s)\n", name, keyFile, pubFile, pub.Hash().ID())
	}
	if !full {
		return 0, nil
	}
	dsn := brokerDSN(dir, database)
	db, err := broker.Open(context.Background(), dsn)
	if err != nil {
		return 1, fmt.Errorf("creating the ledger: %w", err)
	}
	db.Close()
	fmt.Printf("ledger  %s\n", redactDSN(dsn))
	caddyfile := filepath.Join(dir, "Caddyfile")
	cf := fmt.Sprintf("# The ecoupons broker: ecoupons run --config %[1]s\nbroker.example {\n\tecoupon_broker {\n\t\tkey %[2]s\n\t\tdatabase %[3]s\n\t\tadmin_key %[4]s\n\t}\n}\n",
		caddyfile, filepath.Join(dir, "broker.pem"), dsn, filepath.Join(dir, "admin.pub"))
	f, err := os.OpenFile(caddyfile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 1, fmt.Errorf("writing the Caddyfile: %w", err)
	}
	if _, err := f.WriteString(cf); err != nil {
		f.Close()
		return 1, err
	}
	if err := f.Close(); err != nil {
		return 1, err
	}
	fmt.Printf("site    %s (replace broker.example by your host name)\n", caddyfile)
	fmt.Printf("\nserve it: ecoupons broker run --dir %s   (or: ecoupons run --config %s)\n", dir, caddyfile)
	fmt.Printf("operate it (admin.pem signs): ecoupons broker account list --dir %s --broker http://127.0.0.1:8080\n", dir)
	return 0, nil
}

func brokerDSN(dir, database string) string {
	if database != "" {
		return database
	}
	return filepath.Join(dir, "broker.db")
}

// redactDSN hides a database URL's password.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}

// brokerRun serves the broker of dir on --listen until interrupted.
func brokerRun(fl caddycmd.Flags) (int, error) {
	dir := fl.String("dir")
	if dir == "" {
		return 2, errors.New("--dir is required (the directory of: ecoupons broker init)")
	}
	for _, f := range []string{"broker.pem", "admin.pub"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return 1, fmt.Errorf("%w (run: ecoupons broker init --dir %s)", err, dir)
		}
	}
	fee, _ := strconv.ParseInt(fl.String("fee"), 10, 64)
	if fee < 0 || fee > 10000 {
		return 2, fmt.Errorf("--fee %d: basis points, 0 to 10000", fee)
	}
	listen := fl.String("listen")
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"broker": map[string]any{"listen": []string{listen}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "ecoupon_broker",
					"key_file": filepath.Join(dir, "broker.pem"), "database": brokerDSN(dir, fl.String("database")),
					"admin_keys": []string{filepath.Join(dir, "admin.pub")}, "fee_basis_points": fee}}}}},
		}}},
	}
	raw, _ := json.Marshal(cfg)
	// Caddy saves the running config for 'caddy run --resume'; the
	// broker's goes into its own directory, not over the user's
	// ~/.config/caddy/autosave.json.
	caddy.ConfigAutosavePath = filepath.Join(dir, "autosave.json")
	if err := caddy.Load(raw, true); err != nil {
		return 1, err
	}
	fmt.Printf("broker serving on http://%s (API /v1/, back office /office/); Ctrl-C stops it\n", listen)
	fmt.Printf("operate it: ecoupons broker account list --dir %s --broker http://%s\n", dir, listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return 0, caddy.Stop()
}
