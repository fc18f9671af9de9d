package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/wallet"
	"github.com/spf13/cobra"
)

// brokerDenominations reads the broker's published denominations in the
// wallet's currency, each checked against the broker's certificate.
func brokerDenominations(w *wallet.Wallet) ([]*blindfund.Denomination, error) {
	bk, err := w.BrokerPublicKey()
	if err != nil {
		return nil, err
	}
	var out struct {
		Denominations []blindfund.Published `json:"denominations"`
	}
	if err := brokerCall(w, "GET", "/v1/denominations", nil, &out); err != nil {
		return nil, err
	}
	var ds []*blindfund.Denomination
	for _, p := range out.Denominations {
		d, err := blindfund.ParseDenomination([]byte(p.Denomination))
		if err != nil {
			return nil, fmt.Errorf("the broker's denomination %s: %w", p.ID, err)
		}
		x, err := spki.Parse([]byte(p.Certificate))
		if err != nil {
			return nil, fmt.Errorf("the broker's certificate of denomination %s: %w", p.ID, err)
		}
		cert, err := spki.ParseSignedCert(x)
		if err == nil {
			err = blindfund.CheckCert(d, cert, bk)
		}
		if err != nil {
			return nil, fmt.Errorf("the broker's certificate of denomination %s: %w", p.ID, err)
		}
		if d.Currency == w.Config.Currency {
			ds = append(ds, d)
		}
	}
	return ds, nil
}

// chooseDenomination picks the denomination spec names: a face value
// ("0.512": the one issuing now, ending last) or a prefix of its ID.
func chooseDenomination(ds []*blindfund.Denomination, spec string) (*blindfund.Denomination, error) {
	now := time.Now()
	var found *blindfund.Denomination
	face, faceErr := coupons.ParseAmount(spec)
	for _, d := range ds {
		id := d.ID()
		byID := spec != "" && strings.HasPrefix(base64.RawURLEncoding.EncodeToString(id[:]), spec)
		byFace := faceErr == nil && d.Face == face && !now.Before(d.NotBefore) && now.Before(d.NotAfter)
		if byID || byFace {
			if found != nil && (byID || d.NotAfter.Before(found.NotAfter)) {
				if byID {
					return nil, walletErr{exitUsage, fmt.Errorf("--denomination %q names more than one denomination", spec)}
				}
				continue
			}
			found = d
		}
	}
	if found == nil {
		var have []string
		for _, d := range ds {
			id := d.ID()
			have = append(have, fmt.Sprintf("%s %s (%s…, until %s)", coupons.FormatAmount(d.Face), d.Currency,
				base64.RawURLEncoding.EncodeToString(id[:])[:12], d.NotAfter.Format("2006-01-02")))
		}
		return nil, walletErr{exitUsage, fmt.Errorf("--denomination %q: the broker issues %s", spec, strings.Join(have, ", "))}
	}
	return found, nil
}

// newAnonymousBook is 'book new --anonymous': a book of the chosen
// denomination's face value, owned by a fresh key, funded by the
// broker's blind signature.
func newAnonymousBook(cmd *cobra.Command, w *wallet.Wallet, vendor, spec string, lanes, length uint32, unit int64, days int) error {
	ds, err := brokerDenominations(w)
	if err != nil {
		return err
	}
	d, err := chooseDenomination(ds, spec)
	if err != nil {
		return err
	}
	per, err := coupons.MulAmount(uint64(length), unit)
	if err != nil {
		return walletErr{exitUsage, err}
	}
	if !cmd.Flags().Changed("lanes") {
		if d.Face%per != 0 {
			return walletErr{exitUsage, fmt.Errorf("a denomination of %s %s is not a whole number of lanes of %d coupons of %s: choose --length and --unit",
				coupons.FormatAmount(d.Face), d.Currency, length, coupons.FormatAmount(unit))}
		}
		lanes = uint32(d.Face / per)
	}
	notAfter := time.Now().Add(time.Duration(days) * 24 * time.Hour)
	if notAfter.After(d.NotAfter) {
		notAfter = d.NotAfter
	}
	id, err := w.NewAnonymousBook(wallet.AnonymousParams{Vendor: vendor, Lanes: lanes, Length: length, Unit: unit, NotAfter: notAfter, Denomination: d}, nil)
	if err != nil {
		return walletErr{exitUsage, err}
	}
	if err := fundAnonymous(w, id); err != nil {
		return err
	}
	if jsonOutput(cmd) {
		return printJSON(map[string]any{"book": wallet.BookID(id), "id": wallet.BookID(id)[:12], "vendor": vendor, "anonymous": true,
			"lanes": lanes, "length": length, "unit": coupons.FormatAmount(unit), "currency": d.Currency, "face": coupons.FormatAmount(d.Face),
			"state": string(wallet.BookFunded)})
	}
	fmt.Printf("anonymous book %s for %s: %d lanes × %d coupons of %s %s, funded blindly (the broker debited %s %s and cannot tell which book it paid for)\n",
		wallet.BookID(id)[:12], vendor, lanes, length, coupons.FormatAmount(unit), d.Currency, coupons.FormatAmount(d.Face), d.Currency)
	return nil
}

// fundAnonymous asks the broker to blind-sign a pending anonymous book
// (POST /v1/anonymous; a retry debits nothing more) and keeps the proof.
func fundAnonymous(w *wallet.Wallet, id [32]byte) error {
	denom, blinded, issue, err := w.AnonymousRequest(id)
	if err != nil {
		return err
	}
	var out struct {
		BlindSignature string `json:"blind_signature"`
	}
	err = brokerCall(w, "POST", "/v1/anonymous", map[string]string{"account": w.Config.Account,
		"denomination": base64.RawURLEncoding.EncodeToString(denom[:]), "blinded": base64.RawURLEncoding.EncodeToString(blinded), "id": issue}, &out)
	if err != nil {
		return fmt.Errorf("the anonymous book is kept but not funded yet, so it will not be spent; retry with 'ecoupons wallet book fund %s': %w", wallet.BookID(id)[:12], err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(out.BlindSignature)
	if err != nil {
		return fmt.Errorf("the broker's blind signature: %w", err)
	}
	return w.SaveBlindSignature(id, sig)
}

// walletBookRefundCmd is 'book refund': an expired anonymous book's
// unspent value back to an account, signed by the book's own key.
func walletBookRefundCmd() *cobra.Command {
	c := &cobra.Command{Use: "refund BOOK [--account A]", Short: "Return an expired anonymous book's unspent value to an account", Args: cobra.ExactArgs(1),
		Long: `Asks the broker for the unspent value of an expired anonymous book (once its expiry and the
7 days vendors have to redeem have passed), paid to --account (default: this wallet's). The request
is signed by the book's own key, which proves the book is yours; the broker then knows that this
book's remainder went to that account. Refund from another account, or long after the book was
funded, to keep the two unlinked (docs/PROTOCOL.md §20).`,
		Run: run(func(cmd *cobra.Command, args []string) error {
			w, err := loadWallet(cmd)
			if err != nil {
				return err
			}
			books, err := w.Books()
			if err != nil {
				return err
			}
			e, err := findBook(books, args[0])
			if err != nil {
				return err
			}
			if !e.Anonymous() || !e.Owned() {
				return walletErr{exitUsage, errors.New("only an anonymous book this wallet owns is refunded this way (other books are released to their owner's account by the broker)")}
			}
			account, _ := cmd.Flags().GetString("account")
			if account == "" {
				account = w.Config.Account
			}
			refunded, err := refundAnonymous(w, e.Holder.Book.Book.ID(), account)
			if err != nil {
				return err
			}
			cur := e.Holder.Book.Book.Currency
			if jsonOutput(cmd) {
				return printJSON(map[string]any{"book": e.ShortID(), "refunded": refunded, "currency": cur, "account": account})
			}
			fmt.Printf("anonymous book %s: %s %s refunded to %s\n", e.ShortID(), refunded, cur, account)
			return nil
		})}
	c.Flags().String("account", "", "the account paid (default: this wallet's)")
	return c
}

// refundAnonymous asks the broker for the unspent value of the expired
// anonymous book id, paid to account (POST /v1/anonymous/refund, signed
// by the book's own key); it returns the amount refunded.
func refundAnonymous(w *wallet.Wallet, id [32]byte, account string) (string, error) {
	sb, proof, key, err := w.AnonymousProof(id)
	if err != nil {
		return "", err
	}
	var out struct {
		Refunded string `json:"refunded"`
	}
	err = brokerCallAs(w, key, "POST", "/v1/anonymous/refund", map[string]string{"book": string(spki.Transport(sb.Sexp())),
		"funding": string(spki.Transport(proof.Sexp())), "account": account}, &out)
	return out.Refunded, err
}

// revokeAnonymousGrant revokes a grant of an anonymous book this wallet
// owns (POST /v1/anonymous/revoke, signed by the book's own key).
func revokeAnonymousGrant(w *wallet.Wallet, g *delegation.Grant, alsoKey bool) error {
	sb, proof, key, err := w.AnonymousProof(g.Book.Book.ID())
	if err != nil {
		return fmt.Errorf("the grant is of an anonymous book this wallet does not own: only the book's own key revokes it: %w", err)
	}
	return brokerCallAs(w, key, "POST", "/v1/anonymous/revoke", map[string]any{"book": string(spki.Transport(sb.Sexp())),
		"funding": string(spki.Transport(proof.Sexp())), "certificate": string(spki.Transport(g.Cert().Sexp())), "key": alsoKey}, nil)
}
