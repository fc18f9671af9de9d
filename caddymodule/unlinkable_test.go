package caddymodule

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/internal/testpg"
	"github.com/ecoupons/ecoupons/spki"
)

// TestBrokerCannotLinkAnonymousBooks: alice and bob each fund an
// anonymous book from their accounts; both books are spent at a vendor's
// gate, which registers them and redeems their coupons. Then, reading the
// broker's database apart from the broker (SQLite and PostgreSQL), no row
// of any table names both an account (or its key) and a book (its ID,
// escrow, salt, root or funding signature), and no ledger transaction
// moves money between an account and a book's escrow or the vendor: the
// issuance moves it from the account to the pool, the registration from
// the pool to the escrow, the redemption from the escrow to the vendor.
// The vendor's lane records hold no key of either reader.
func TestBrokerCannotLinkAnonymousBooks(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testBrokerCannotLink(t, "") })
	t.Run("postgres", func(t *testing.T) { testBrokerCannotLink(t, testpg.Start(t)) })
}

func testBrokerCannotLink(t *testing.T, pgURL string) {
	ctx := context.Background()
	aw := newAnonWorldOn(t, pgURL)
	bobKey := testKey("bob")
	bob, _ := spki.NewPublicKey(bobKey.Public())
	bobAcct, _, err := aw.b.RegisterUser(ctx, bob, "EUR", 0, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := aw.b.TopUp(ctx, bobAcct, coupons.NanosPerUnit, "bob"); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(24 * time.Hour)
	type reader struct {
		name    string
		key     spki.KeyHash
		account string
		book    *delegation.Holder
		proof   *blindfund.Proof
	}
	readers := []*reader{{name: "alice", key: aw.alice.Hash(), account: aw.acct}, {name: "bob", key: bob.Hash(), account: bobAcct}}
	for _, r := range readers {
		r.book, r.proof = aw.anonBookFrom(t, r.key, r.account, 3, later, "issue-"+r.name)
	}
	g := aw.gate(t, ModeOffline, filepath.Join(aw.dir, "secret"))
	spent := 0
	for k, r := range readers {
		c := newClient(t, nil, r.book, 0)
		for range 2 + k {
			if rec := payOn(t, g, c); rec.Code != 200 {
				t.Fatalf("%s's payment: %d %s", r.name, rec.Code, rec.Body)
			}
			spent++
		}
	}
	if n, err := g.redeemOnce(ctx); err != nil || n != 2 {
		t.Fatalf("redeemed %d lanes: %v", n, err)
	}
	if got := aw.balance(t, "vendor:news.example:EUR"); got != int64(spent)*1_000_000 {
		t.Fatalf("the vendor was paid %d for %d coupons", got, spent)
	}

	// What names each account, and each book, in the broker's rows.
	accountMarks := map[string][]string{}
	bookMarks := map[string][]string{}
	for _, r := range readers {
		accountMarks[r.name] = []string{r.account, hex.EncodeToString(r.key[:]), base64.RawURLEncoding.EncodeToString(r.key[:])}
		b := r.book.Book.Book
		id := b.ID()
		bookMarks[r.name] = []string{hex.EncodeToString(id[:]), base64.RawURLEncoding.EncodeToString(id[:]), base64.StdEncoding.EncodeToString(id[:]),
			hex.EncodeToString(b.Salt[:]), hex.EncodeToString(b.Root[:]), hex.EncodeToString(r.proof.Signature),
			base64.StdEncoding.EncodeToString(r.proof.Signature), base64.RawURLEncoding.EncodeToString(r.proof.Signature),
			hex.EncodeToString(r.proof.Prefix[:])}
	}
	has := func(row string, marks map[string][]string) string {
		for who, ms := range marks {
			for _, m := range ms {
				if strings.Contains(row, m) {
					return who
				}
			}
		}
		return ""
	}
	raw, err := sql.Open(aw.sqlDriver, aw.sqlDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	seenAccount, seenBook := map[string]bool{}, map[string]bool{}
	for _, table := range tables(t, raw, aw.sqlDriver) {
		for _, row := range rows(t, raw, table) {
			a, b := has(row, accountMarks), has(row, bookMarks)
			if a != "" && b != "" {
				t.Errorf("table %s links %s's account to %s's book: %s", table, a, b, row)
			}
			seenAccount[a], seenBook[b] = true, true
		}
	}
	// The marks are what the rows use: each account and book is found.
	for _, r := range readers {
		if !seenAccount[r.name] || !seenBook[r.name] {
			t.Fatalf("%s's account or book is named nowhere: the marks are wrong, and the check above proves nothing", r.name)
		}
	}
	// No ledger transaction touches an account and an anonymous book's
	// escrow or the vendor. (Alice's ordinary book of the world, funded
	// from her account, is linked to it, as every ordinary book is.)
	txs := map[string][]string{}
	q, err := raw.QueryContext(ctx, `SELECT tx, account FROM entries`)
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var tx, account string
		if err := q.Scan(&tx, &account); err != nil {
			t.Fatal(err)
		}
		txs[tx] = append(txs[tx], account)
	}
	q.Close()
	for tx, accounts := range txs {
		user, other := false, false
		for _, a := range accounts {
			user = user || strings.HasPrefix(a, "user:")
			other = other || strings.HasPrefix(a, "vendor:") || has(a, bookMarks) != "" // an anonymous book's escrow
		}
		if user && other {
			t.Errorf("ledger transaction %s moves money between an account and a book or the vendor: %v", tx, accounts)
		}
	}
	// The vendor's records: no reader's key or user certificate.
	for _, r := range readers {
		rec, err := g.store.Get(ctx, coupons.LaneID{Book: r.book.Book.Book.ID(), Lane: 0})
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%x %x %x %x", rec.Meta.Owner, rec.Meta.Spender, rec.Meta.Keys, rec.Meta.Certs)
		for _, o := range readers {
			if strings.Contains(line, hex.EncodeToString(o.key[:])) {
				t.Errorf("the vendor's record of %s's lane names %s's key", r.name, o.name)
			}
		}
	}
}

// tables lists the broker database's tables.
func tables(t *testing.T, db *sql.DB, driver string) []string {
	q := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if driver == "pgx" {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`
	}
	rs, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var n string
		if err := rs.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if len(out) < 10 {
		t.Fatalf("only %d tables: %v", len(out), out)
	}
	return out
}

// rows returns every row of table, its columns' values joined as text.
func rows(t *testing.T, db *sql.DB, table string) []string {
	rs, err := db.Query(`SELECT * FROM ` + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			fmt.Fprintf(&sb, "%s=%v ", cols[i], v)
		}
		out = append(out, sb.String())
	}
	return out
}
