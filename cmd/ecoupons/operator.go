package main

// ecoupons broker account|vendor|statement|thefts: the broker operator's
// commands, signed with an admin key (the admin.pem of broker init).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/keyfile"
	"github.com/spf13/cobra"
)

// operatorHelp is the part of `ecoupons broker --help` on the operator's
// commands.
const operatorHelp = `
The operator's commands sign their calls with an admin key: by default
admin.pem in --dir (the directory of broker init; default
$ECOUPONS_BROKER_DIR), at the broker --broker (default $ECOUPONS_BROKER or
http://127.0.0.1:8080), whose key must be --dir's broker.pub when it is
there:

  ecoupons broker account list [--currency EUR]
  ecoupons broker account show user:…:EUR
  ecoupons broker account topup user:…:EUR 5.00 [--id PAYMENT-ID]
  ecoupons broker account credit user:…:EUR 20      (post-paid, limit 20; 0: pre-paid)
  ecoupons broker account approve user:…:EUR        (users approve policy)
  ecoupons broker vendor add news.example --vendor-key vendor.pub --currency EUR
  ecoupons broker vendor list
  ecoupons broker statement user:…:EUR [--from 2026-12-01] [--to 2026-12-31] [--csv]
  ecoupons broker thefts

Amounts are decimal, in the account's currency. --json prints results
(and errors, on stderr) as JSON. Exit codes: 0 success, 1 failure (no
answer, unreadable key), 2 bad usage, 3 the broker refused the request
(its reason code is printed).`

// addOperatorCommands adds the operator's subcommands to `ecoupons broker`.
func addOperatorCommands(cmd *cobra.Command) {
	account := &cobra.Command{Use: "account", Short: "List, show, top up, set the credit limit of and approve user accounts"}
	account.AddCommand(opAccountList(), opAccountShow(), opAccountTopUp(), opAccountCredit(), opAccountApprove())
	vendor := &cobra.Command{Use: "vendor", Short: "Register and list vendors"}
	vendor.AddCommand(opVendorAdd(), opVendorList())
	denom := &cobra.Command{Use: "denomination", Short: "Make and list the blind-signing keys of anonymous books"}
	denom.AddCommand(opDenominationAdd(), opDenominationList())
	for _, c := range []*cobra.Command{account, vendor, denom, opStatement(), opThefts()} {
		c.PersistentFlags().String("dir", "", "the broker's directory (broker init): admin.pem and broker.pub (default $ECOUPONS_BROKER_DIR)")
		c.PersistentFlags().String("key", "", "the admin's private key (default DIR/admin.pem)")
		c.PersistentFlags().String("passphrase-file", "", "file holding the passphrase of an encrypted --key")
		c.PersistentFlags().String("broker", "", "the broker's base URL (default $ECOUPONS_BROKER or http://127.0.0.1:8080)")
		c.PersistentFlags().String("broker-key", "", "the broker's public key file; the broker must answer with it (default DIR/broker.pub when present)")
		c.PersistentFlags().Bool("json", false, "print results and errors as JSON")
		cmd.AddCommand(c)
	}
}

// adminClient is the signed client of an operator's command.
func adminClient(cmd *cobra.Command) (*opsClient, error) {
	flag := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	dir := flag("dir")
	if dir == "" {
		dir = os.Getenv("ECOUPONS_BROKER_DIR")
	}
	key, keyFlag := flag("key"), "--key"
	if key == "" {
		if dir == "" {
			return nil, usage("give --dir (the directory of ecoupons broker init, holding admin.pem) or --key ADMIN.pem")
		}
		key, keyFlag = filepath.Join(dir, "admin.pem"), "--dir "+dir+": admin.pem"
	}
	bkFile := flag("broker-key")
	if bkFile == "" && dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "broker.pub")); err == nil {
			bkFile = filepath.Join(dir, "broker.pub")
		}
	}
	base := flag("broker")
	if base == "" {
		base = os.Getenv("ECOUPONS_BROKER")
	}
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	return newOpsClient(context.Background(), base, keyFlag, key, flag("passphrase-file"), bkFile)
}

// checkAccount refuses what is not a user account's id.
func checkAccount(a string) error {
	if !strings.HasPrefix(a, "user:") || strings.Count(a, ":") != 2 {
		return usage("%q is not a user account (user:<key>:<currency>; list them with: ecoupons broker account list)", a)
	}
	return nil
}

// parseAmountArg parses an amount argument, allowing the account's
// currency after it ("5", "5 EUR", "5EUR").
func parseAmountArg(what, s string) (int64, string, error) {
	s = strings.TrimSpace(s)
	cur := ""
	if i := strings.LastIndexAny(s, "0123456789"); i >= 0 && i < len(s)-1 {
		s, cur = strings.TrimSpace(s[:i+1]), strings.TrimSpace(s[i+1:])
	}
	n, err := coupons.ParseAmount(s)
	if err != nil {
		return 0, "", usage("%s %q: %v (a decimal such as 5 or 0.25, in the account's currency)", what, s, err)
	}
	return n, cur, nil
}

func opAccountList() *cobra.Command {
	c := &cobra.Command{Use: "list [--currency C] [--key-hash HEX]", Short: "List user accounts", Args: cobra.NoArgs,
		Run: opsRun("ecoupons broker account list", func(cmd *cobra.Command, _ []string) error {
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if v, _ := cmd.Flags().GetString("currency"); v != "" {
				q.Set("currency", v)
			}
			if v, _ := cmd.Flags().GetString("key-hash"); v != "" {
				q.Set("key", v)
			}
			if v, _ := cmd.Flags().GetInt("limit"); v != 0 {
				q.Set("limit", fmt.Sprint(v))
			}
			path := "/v1/admin/accounts"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var out struct {
				Accounts []broker.AdminAccount `json:"accounts"`
				More     bool                  `json:"more"`
			}
			if err := cl.call(context.Background(), "GET", path, nil, &out); err != nil {
				return err
			}
			human := accountTable(out.Accounts)
			if out.More {
				human += "… and more: narrow the list with --currency or --key-hash, or raise --limit\n"
			}
			return opsPrint(cmd, out, human)
		})}
	c.Flags().Int("limit", 0, "the most accounts listed (default: the broker's, 10000)")
	c.Flags().String("currency", "", "only accounts in this currency")
	c.Flags().String("key-hash", "", "only the accounts of this key (its hash, 64 hex digits)")
	return c
}

// accountTable formats accounts for people.
func accountTable(as []broker.AdminAccount) string {
	if len(as) == 0 {
		return "no user accounts"
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tCURRENCY\tBALANCE\tCREDIT LIMIT\tAVAILABLE\tAPPROVED\tOPENED")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\n", a.Account, a.Currency, a.Balance, a.Limit, a.Available, yesNo(a.Approved),
			time.Unix(a.Created, 0).UTC().Format("2006-01-02"))
	}
	tw.Flush()
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func opAccountShow() *cobra.Command {
	return &cobra.Command{Use: "show ACCOUNT", Short: "Show a user account", Args: cobra.ExactArgs(1),
		Run: opsRun("ecoupons broker account show", func(cmd *cobra.Command, args []string) error {
			if err := checkAccount(args[0]); err != nil {
				return err
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Accounts []broker.AdminAccount `json:"accounts"`
			}
			if err := cl.call(context.Background(), "GET", "/v1/admin/accounts?account="+url.QueryEscape(args[0]), nil, &out); err != nil {
				return err
			}
			a := out.Accounts[0]
			kind := "pre-paid"
			if a.Limit != "0" {
				kind = "post-paid, credit limit " + a.Limit + " " + a.Currency
			}
			return opsPrint(cmd, a, fmt.Sprintf("account   %s\nkey hash  %s\ncurrency  %s\nbalance   %s %s\navailable %s %s (%s)\napproved  %s\nopened    %s",
				a.Account, a.Key, a.Currency, a.Balance, a.Currency, a.Available, a.Currency, kind, yesNo(a.Approved),
				time.Unix(a.Created, 0).UTC().Format(time.RFC3339)))
		})}
}

func opAccountTopUp() *cobra.Command {
	c := &cobra.Command{Use: "topup ACCOUNT AMOUNT [--id PAYMENT-ID]", Short: "Credit a user account from outside (a payment received)", Args: cobra.ExactArgs(2),
		Run: opsRun("ecoupons broker account topup", func(cmd *cobra.Command, args []string) error {
			if err := checkAccount(args[0]); err != nil {
				return err
			}
			amt, cur, err := parseAmountArg("AMOUNT", args[1])
			if err != nil {
				return err
			}
			if amt <= 0 {
				return usage("AMOUNT %s: a top-up is positive", args[1])
			}
			if cur != "" && !strings.HasSuffix(args[0], ":"+cur) {
				return usage("AMOUNT is in %s, but %s is not a %s account", cur, args[0], cur)
			}
			id, _ := cmd.Flags().GetString("id")
			generated := id == ""
			if generated {
				var b [8]byte
				rand.Read(b[:])
				id = "cli-" + hex.EncodeToString(b[:])
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			out, err := topUp(context.Background(), cl, args[0], amt, id)
			if err != nil {
				return err
			}
			human := fmt.Sprintf("topped up %s by %s %s: balance %s %s (payment id %s", out.Account, coupons.FormatAmount(amt), out.Currency, out.Balance, out.Currency, id)
			if generated {
				human += "; to retry this top-up safely, give --id " + id
			}
			human += ")"
			return opsPrint(cmd, map[string]any{"account": out.Account, "amount": coupons.FormatAmount(amt), "currency": out.Currency, "balance": out.Balance, "id": id}, human)
		})}
	c.Flags().String("id", "", "idempotency key: the payment's reference; the same id never credits twice (default: a new random one)")
	return c
}

// topUpResult is the broker's answer to a top-up.
type topUpResult struct{ Account, Balance, Currency string }

// topUp credits account with amt at the broker, idempotently by id. When
// no answer comes, the error says to retry with the same id.
func topUp(ctx context.Context, cl *opsClient, account string, amt int64, id string) (topUpResult, error) {
	var out topUpResult
	err := cl.call(ctx, "POST", "/v1/admin/topup", map[string]string{"account": account, "amount": coupons.FormatAmount(amt), "id": id}, &out)
	var oe opsErr
	if errors.As(err, &oe) && oe.code == opsExitFailure {
		// No answer: the broker may have credited the account. Only the
		// same id retries without crediting twice.
		return out, opsErr{opsExitFailure, fmt.Errorf("%w; the top-up may have been recorded: retry with --id %s (the same id never credits twice), not without it", err, id)}
	}
	return out, err
}

func opAccountCredit() *cobra.Command {
	return &cobra.Command{Use: "credit ACCOUNT LIMIT", Short: "Make a user account post-paid with a credit limit (0: pre-paid)", Args: cobra.ExactArgs(2),
		Run: opsRun("ecoupons broker account credit", func(cmd *cobra.Command, args []string) error {
			if err := checkAccount(args[0]); err != nil {
				return err
			}
			limit, cur, err := parseAmountArg("LIMIT", args[1])
			if err != nil {
				return err
			}
			if limit < 0 {
				return usage("LIMIT %s: a credit limit is 0 or more", args[1])
			}
			if cur != "" && !strings.HasSuffix(args[0], ":"+cur) {
				return usage("LIMIT is in %s, but %s is not a %s account", cur, args[0], cur)
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct{ Account, Limit, Currency, Balance string }
			if err := cl.call(context.Background(), "POST", "/v1/admin/credit", map[string]string{"account": args[0], "limit": coupons.FormatAmount(limit)}, &out); err != nil {
				return err
			}
			human := fmt.Sprintf("%s is post-paid with a credit limit of %s %s (balance %s %s)", out.Account, out.Limit, out.Currency, out.Balance, out.Currency)
			if limit == 0 {
				human = fmt.Sprintf("%s is pre-paid (balance %s %s)", out.Account, out.Balance, out.Currency)
			}
			return opsPrint(cmd, out, human)
		})}
}

func opAccountApprove() *cobra.Command {
	return &cobra.Command{Use: "approve ACCOUNT", Short: "Approve a user account (users approve policy), so that the broker funds its books", Args: cobra.ExactArgs(1),
		Run: opsRun("ecoupons broker account approve", func(cmd *cobra.Command, args []string) error {
			if err := checkAccount(args[0]); err != nil {
				return err
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			if err := cl.call(context.Background(), "POST", "/v1/admin/approve", map[string]string{"account": args[0]}, nil); err != nil {
				return err
			}
			return opsPrint(cmd, map[string]any{"account": args[0], "approved": true}, args[0]+" approved: the broker funds its books")
		})}
}

func opVendorAdd() *cobra.Command {
	c := &cobra.Command{Use: "add NAME --vendor-key FILE [--currency EUR]", Short: "Register a vendor for its public key", Args: cobra.ExactArgs(1),
		Run: opsRun("ecoupons broker vendor add", func(cmd *cobra.Command, args []string) error {
			vk, _ := cmd.Flags().GetString("vendor-key")
			cur, _ := cmd.Flags().GetString("currency")
			if vk == "" {
				return usage("--vendor-key FILE is required: the vendor's public key (vendor.pub of: ecoupons vendor init)")
			}
			if err := coupons.CheckCurrency(cur); err != nil {
				return usage("--currency %q: %v", cur, err)
			}
			k, err := keyfile.ReadPublic(vk)
			if err != nil {
				return opsErr{opsExitFailure, fmt.Errorf("--vendor-key: %w", err)}
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct{ Name, Account, Currency, Key string }
			if err := cl.call(context.Background(), "POST", "/v1/admin/vendors", map[string]string{"name": args[0], "key": pubText(k), "currency": cur}, &out); err != nil {
				return err
			}
			return opsPrint(cmd, out, fmt.Sprintf("vendor %s registered: account %s, paid in %s (key hash %s)", out.Name, out.Account, out.Currency, out.Key))
		})}
	c.Flags().String("vendor-key", "", "the vendor's public key file (vendor.pub, or a PEM PUBLIC KEY)")
	c.Flags().String("currency", "EUR", "the vendor's currency, fixed at registration")
	return c
}

func opVendorList() *cobra.Command {
	return &cobra.Command{Use: "list", Short: "List the registered vendors", Args: cobra.NoArgs,
		Run: opsRun("ecoupons broker vendor list", func(cmd *cobra.Command, _ []string) error {
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Vendors []broker.AdminVendor `json:"vendors"`
			}
			if err := cl.call(context.Background(), "GET", "/v1/admin/vendors", nil, &out); err != nil {
				return err
			}
			if len(out.Vendors) == 0 {
				return opsPrint(cmd, out, "no vendors")
			}
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VENDOR\tCURRENCY\tBALANCE\tACCOUNT\tKEY HASH")
			for _, v := range out.Vendors {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.Currency, v.Balance, v.Account, v.Key)
			}
			tw.Flush()
			return opsPrint(cmd, out, b.String())
		})}
}

// statementFlags adds --from, --to and --csv.
func statementFlags(c *cobra.Command) {
	c.Flags().String("from", "", "first day, YYYY-MM-DD (default: the first of this month, UTC)")
	c.Flags().String("to", "", "the day after the last, YYYY-MM-DD (default: tomorrow, UTC)")
	c.Flags().Bool("csv", false, "print CSV (day, kind, transactions, amount, currency)")
}

// fetchStatement gets and prints the statement of account.
func fetchStatement(cmd *cobra.Command, cl *opsClient, account string) error {
	from, _ := cmd.Flags().GetString("from")
	to, _ := cmd.Flags().GetString("to")
	asCSV, _ := cmd.Flags().GetBool("csv")
	now := time.Now().UTC()
	if from == "" {
		from = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Format("2006-01-02")
	}
	if to == "" {
		to = now.AddDate(0, 0, 1).Format("2006-01-02")
	}
	for _, d := range []struct{ flag, v string }{{"--from", from}, {"--to", to}} {
		if _, err := time.Parse("2006-01-02", d.v); err != nil {
			return usage("%s %q: a date, YYYY-MM-DD", d.flag, d.v)
		}
	}
	q := url.Values{"account": {account}, "from": {from}, "to": {to}}
	if asCSV {
		q.Set("format", "csv")
		return cl.call(context.Background(), "GET", "/v1/statements?"+q.Encode(), nil, os.Stdout)
	}
	var st struct {
		Account  string `json:"account"`
		Currency string `json:"currency"`
		From     string `json:"from"`
		To       string `json:"to"`
		Opening  string `json:"opening"`
		Closing  string `json:"closing"`
		Rows     []struct {
			Day          string `json:"day"`
			Kind         string `json:"kind"`
			Transactions int64  `json:"transactions"`
			Amount       string `json:"amount"`
		} `json:"rows"`
	}
	if err := cl.call(context.Background(), "GET", "/v1/statements?"+q.Encode(), nil, &st); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "statement of %s, %s to %s (exclusive), in %s\n", st.Account, st.From, st.To, st.Currency)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DAY\tKIND\tTRANSACTIONS\tAMOUNT")
	fmt.Fprintf(tw, "%s\topening\t\t%s\n", st.From, st.Opening)
	for _, r := range st.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Day, r.Kind, r.Transactions, r.Amount)
	}
	fmt.Fprintf(tw, "%s\tclosing\t\t%s\n", st.To, st.Closing)
	tw.Flush()
	return opsPrint(cmd, st, b.String())
}

func opStatement() *cobra.Command {
	c := &cobra.Command{Use: "statement ACCOUNT [--from D] [--to D] [--csv]", Short: "An account's statement: per day and kind, with opening and closing balances", Args: cobra.ExactArgs(1),
		Run: opsRun("ecoupons broker statement", func(cmd *cobra.Command, args []string) error {
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			return fetchStatement(cmd, cl, args[0])
		})}
	statementFlags(c)
	return c
}

func opThefts() *cobra.Command {
	return &cobra.Command{Use: "thefts", Short: "List the coupon thefts gates reported, newest first", Args: cobra.NoArgs,
		Run: opsRun("ecoupons broker thefts", func(cmd *cobra.Command, _ []string) error {
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Thefts []broker.AdminTheft `json:"thefts"`
			}
			if err := cl.call(context.Background(), "GET", "/v1/admin/thefts", nil, &out); err != nil {
				return err
			}
			if len(out.Thefts) == 0 {
				return opsPrint(cmd, out, "no thefts reported")
			}
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPORTED\tVENDOR\tACCOUNT\tLANE\tCOUPON")
			for _, t := range out.Thefts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", time.Unix(t.Reported, 0).UTC().Format(time.RFC3339), t.Vendor, t.Account, t.Lane, t.Index)
			}
			tw.Flush()
			return opsPrint(cmd, out, b.String())
		})}
}

func opDenominationAdd() *cobra.Command {
	c := &cobra.Command{Use: "add --face AMOUNT [--currency EUR] [--from TIME] [--days N]", Short: "Make a blind-signing key for anonymous books of one face value",
		Args: cobra.NoArgs,
		Run: opsRun("ecoupons broker denomination add", func(cmd *cobra.Command, _ []string) error {
			face, _ := cmd.Flags().GetString("face")
			cur, _ := cmd.Flags().GetString("currency")
			from, _ := cmd.Flags().GetString("from")
			days, _ := cmd.Flags().GetInt("days")
			if face == "" {
				return usage("--face AMOUNT is required: the face value of the books it funds (lanes × length × unit), e.g. 1.024")
			}
			if v, err := coupons.ParseAmount(face); err != nil || v <= 0 {
				return usage("--face %q: a positive amount, e.g. 1.024", face)
			}
			if err := coupons.CheckCurrency(cur); err != nil {
				return usage("--currency %q: %v", cur, err)
			}
			if days < 1 {
				return usage("--days %d: the key issues for at least 1 day", days)
			}
			start := time.Now().UTC().Truncate(time.Second)
			if from != "" {
				t, err := time.Parse(time.RFC3339, from)
				if err != nil {
					return usage("--from %q: an RFC 3339 time, e.g. 2027-01-01T00:00:00Z", from)
				}
				start = t
			}
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct {
				ID           string `json:"id"`
				Denomination string `json:"denomination"`
			}
			err = cl.call(context.Background(), "POST", "/v1/admin/denominations", map[string]string{"face": face, "currency": cur,
				"not_before": start.Format(time.RFC3339), "not_after": start.AddDate(0, 0, days).Format(time.RFC3339)}, &out)
			if err != nil {
				return err
			}
			return opsPrint(cmd, out, fmt.Sprintf("denomination %s: books of %s %s, issued from %s for %d days", out.ID, face, cur, start.Format(time.RFC3339), days))
		})}
	c.Flags().String("face", "", "the face value of the books it funds")
	c.Flags().String("currency", "EUR", "their currency")
	c.Flags().String("from", "", "when it starts issuing (RFC 3339; default now)")
	c.Flags().Int("days", 30, "how long it issues; books it funds expire by its end")
	return c
}

func opDenominationList() *cobra.Command {
	return &cobra.Command{Use: "list", Short: "List the denominations issuing now or later", Args: cobra.NoArgs,
		Run: opsRun("ecoupons broker denomination list", func(cmd *cobra.Command, _ []string) error {
			cl, err := adminClient(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Denominations []struct {
					ID           string `json:"id"`
					Face         string `json:"face"`
					Currency     string `json:"currency"`
					Denomination string `json:"denomination"`
				} `json:"denominations"`
			}
			if err := cl.call(context.Background(), "GET", "/v1/denominations", nil, &out); err != nil {
				return err
			}
			if len(out.Denominations) == 0 {
				return opsPrint(cmd, out, "no denominations")
			}
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFACE\tCURRENCY\tPERIOD")
			for _, d := range out.Denominations {
				period := ""
				if p, err := blindfund.ParseDenomination([]byte(d.Denomination)); err == nil {
					period = p.NotBefore.Format(time.RFC3339) + " – " + p.NotAfter.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.ID, d.Face, d.Currency, period)
			}
			tw.Flush()
			return opsPrint(cmd, out, strings.TrimRight(b.String(), "\n"))
		})}
}
