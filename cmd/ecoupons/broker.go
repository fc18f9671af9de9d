package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "broker-init",
		Usage: "--dir <directory>",
		Short: "Creates the keys of a new ecoupons broker",
		Long: `
Writes into --dir (created if needed, files never overwritten):

  broker.pem   the broker's private key (Ed25519, PEM, mode 0600): the
               'key' of the ecoupon_broker directive
  broker.pub   its (public-key …): the 'broker_key' of every gate
  admin.pem    an administrator's private key (mode 0600)
  admin.pub    its (public-key …): the 'admin_key' of ecoupon_broker`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("dir", "", "directory for the keys (required)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(brokerInit)
		},
	})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "office-link",
		Usage: "--key <pem file> --broker <url>",
		Short: "Prints a sign-in link to a broker's back office, signed by a key",
		Long: `
Signs a one-time link to the back office of the broker at --broker with the
private key in --key (PEM): a vendor's key (the gate's vendor_key) shows the
vendor's revenue and redemptions, a user's key the user's accounts. The link
works once, within the broker's replay window (5 minutes). Wallets have
their own: ecoupons wallet office.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("key", "", "PEM file of the private key (required)")
			cmd.Flags().String("broker", "", "the broker's base URL (required)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(officeLink)
		},
	})
}

func officeLink(fl caddycmd.Flags) (int, error) {
	keyFile, base := fl.String("key"), fl.String("broker")
	if keyFile == "" || base == "" {
		return 2, errors.New("--key and --broker are required")
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
	link, err := broker.OfficeLoginURL(base, signer, time.Now())
	if err != nil {
		return 1, err
	}
	fmt.Println(link)
	return 0, nil
}

func brokerInit(fl caddycmd.Flags) (int, error) {
	dir := fl.String("dir")
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
		fmt.Printf("%-6s key %s, public key %s (hash %s)\n", name, keyFile, pubFile, pub.Hash())
	}
	return 0, nil
}
