package broker

import (
	"cmp"
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
)

// Redemption is one lane's highest coupon, submitted by the vendor. The
// first redemption of a lane also carries the lane's anchor and its Merkle
// proof, which the broker checks against the book's root and keeps.
type Redemption struct {
	Lane   coupons.LaneID
	Index  uint32
	Value  coupons.Value
	Anchor *coupons.Value // required on a lane's first redemption
	Proof  [][32]byte
	// Theft, when set, is evidence the gate found on this lane (a coupon
	// spent by someone who did not know the next chain value); it is
	// checked against the redeemed chain and recorded for the book's owner.
	Theft *coupons.Theft
}

// RedeemResult says what one redemption paid.
type RedeemResult struct {
	Lane    coupons.LaneID
	Coupons uint32 // newly redeemed coupons (0 when already redeemed: idempotent)
	Amount  int64  // paid to the vendor, in nanos, after the fee
	Fee     int64
	Err     error // why this item was refused (nil when paid or already paid)
	// Code is Err's reason code (RedeemUnknownBook, …; "" when paid).
	Code string
	// Theft is TheftRecorded, or why the item's theft evidence was
	// refused ("" without evidence).
	Theft string
}

// maxBatch bounds one redemption batch.
const maxBatch = 10000

// Redeem pays a vendor for a batch of redemptions, in one database
// transaction: for each lane only the increase over what it already
// redeemed is paid, from the book's escrow to the vendor (less the fee).
// A retried batch pays nothing twice. Items that fail verification are
// refused one by one (RedeemResult.Err) without affecting the others.
//
// The batch costs a bounded number of statements whatever the books it
// spans: its books and lanes are read a chunk at a time, items are
// verified in memory in batch order (a lane named twice sees its first
// item's redemption), the lanes changed are written a chunk at a time
// (on SQLite, where a statement costs no round trip, each lane updated
// is its own statement: writeLanes), and the whole batch pays with one
// ledger transaction holding one entry per account (each book's escrow
// and reserve, the vendor's account, the fees).
func (b *Broker) Redeem(ctx context.Context, vendorKey spki.KeyHash, batch []Redemption) ([]RedeemResult, error) {
	if len(batch) == 0 || len(batch) > maxBatch {
		return nil, fmt.Errorf("%w: a batch holds 1 to %d redemptions", ErrRedemption, maxBatch)
	}
	out := make([]RedeemResult, len(batch))
	// The statements of every batch, compiled once (SQLite).
	stmts, err := b.DB.redeemStmts(ctx)
	if err != nil {
		return nil, err
	}
	err = b.tx(ctx, func(tx *sql.Tx) error {
		// The vendor names of the key: several when the vendor registered
		// one per currency, say; each book pays the account of its name.
		rs := &redeemState{db: b.DB, stmts: stmts, books: map[[32]byte]*bookRow{}, totals: map[[32]byte]*bookTotals{}, vendors: map[string]vendorRow{},
			lanes: make(map[coupons.LaneID]*laneRow, len(batch))}
		var rows *sql.Rows
		var err error
		if stmts != nil {
			rows, err = tx.StmtContext(ctx, stmts.vendors).QueryContext(ctx, hexKey(vendorKey))
		} else {
			rows, err = tx.QueryContext(ctx, vendorsQuery, hexKey(vendorKey))
		}
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			var v vendorRow
			if err := rows.Scan(&name, &v.account, &v.currency); err != nil {
				rows.Close()
				return err
			}
			rs.vendors[name] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(rs.vendors) == 0 {
			return fmt.Errorf("%w: no vendor registered for this key", ErrUnknownVendor)
		}
		if err := rs.loadBooks(ctx, tx, batch); err != nil {
			return err
		}
		if err := rs.loadLanes(ctx, tx, batch); err != nil {
			return err
		}
		for i := range batch {
			res, err := b.redeemOne(ctx, tx, rs, &batch[i])
			if err != nil && !isItemError(err) {
				return err // a database failure: the whole batch rolls back
			}
			res.Err = err
			if ie := (itemError{}); errors.As(err, &ie) {
				res.Code = ie.code
			}
			out[i] = res
		}
		// The lanes' redeemed marks, written in the same database
		// transaction as the payment, make the batch idempotent.
		if err := rs.writeLanes(ctx, tx); err != nil {
			return err
		}
		// One ledger transaction per currency (one in all, but for a
		// vendor paid in several): each book's escrow (and reserve, for
		// reserved lanes) pays the vendor and the fees.
		type ledgerTx struct {
			entries []entry
			paid    map[string]int64 // vendor and fee accounts
			order   []string
		}
		var currencies []string
		byCurrency := map[string]*ledgerTx{}
		for _, book := range rs.paidBooks {
			t := rs.totals[book]
			v := rs.vendors[rs.books[book].vendor]
			l := byCurrency[v.currency]
			if l == nil {
				l = &ledgerTx{paid: map[string]int64{}}
				byCurrency[v.currency] = l
				currencies = append(currencies, v.currency)
			}
			l.entries = append(l.entries, entry{escrowAccount(book), -t.escrow}, entry{reserveAccount(book), -t.reserve})
			for _, c := range []entry{{v.account, t.escrow + t.reserve - t.fee}, {feesAccount(v.currency), t.fee}} {
				if _, ok := l.paid[c.account]; !ok {
					l.order = append(l.order, c.account)
				}
				l.paid[c.account] += c.amount
			}
		}
		for _, cur := range currencies {
			l := byCurrency[cur]
			for _, a := range l.order {
				l.entries = append(l.entries, entry{a, l.paid[a]})
			}
			if _, err := post(ctx, b.DB, tx, b.Now(), "redeem", "", "", l.entries...); err != nil {
				return err // the escrow always covers its book's coupons: a failure here is a bug or corruption
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// redeemState holds, within one batch, the books and lanes it touches
// and the amounts owed per book.
type redeemState struct {
	db        *DB
	stmts     *redeemStmts          // nil on PostgreSQL
	books     map[[32]byte]*bookRow // nil: not registered here
	totals    map[[32]byte]*bookTotals
	paidBooks [][32]byte           // the books of totals, in batch order
	vendors   map[string]vendorRow // the caller's vendor names
	lanes     map[coupons.LaneID]*laneRow
	changed   []*laneRow // the lanes to write, in batch order
}

// vendorRow is a vendor name's account and currency.
type vendorRow struct{ account, currency string }

// bookTotals is what one batch pays from a book: from its escrow, from
// its reserve (reserved lanes), and the broker's fee out of both.
type bookTotals struct{ escrow, reserve, fee int64 }

type bookRow struct {
	hex                 string
	vendor, currency    string
	unit, lanes, length int64
	released            int64
	salt, root          [32]byte
}

// laneRow is a lane's row as this batch leaves it.
type laneRow struct {
	id       coupons.LaneID
	exists   bool  // in the table before this batch
	rowid    int64 // SQLite's, when exists
	changed  bool  // to be written
	redeemed int64
	value    coupons.Value
	reserved int64
}

// chunk bounds the rows one statement reads or writes (and so its
// parameters: at most 5 per row, far below SQLite's 32,766 and
// PostgreSQL's 65,535).
const chunk = 1000

// placeholders appends n groups of k parameters, numbered from 1:
// "($1, $2), ($3, $4)" (DB.param); wrap, when set, formats each (e.g. a
// cast).
func (d *DB) placeholders(sb *strings.Builder, n, k int, wrap []string) {
	p := 1
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteByte('(')
		for j := 0; j < k; j++ {
			if j > 0 {
				sb.WriteString(", ")
			}
			ph := d.param(p)
			if wrap != nil && wrap[j] != "" {
				ph = fmt.Sprintf(wrap[j], ph)
			}
			sb.WriteString(ph)
			p++
		}
		sb.WriteByte(')')
	}
}

// query runs the query of len(args)/k rows of k parameters each: with
// cached (the prepared statements by padSize), the one of the smallest
// size that holds them, the last row repeated to fill it; without, the
// text sqlFor builds for that many rows.
func (rs *redeemState) query(ctx context.Context, tx *sql.Tx, cached map[int]*sql.Stmt, sqlFor func(int) string, args []any, k int) (*sql.Rows, error) {
	n := len(args) / k
	if cached == nil {
		return tx.QueryContext(ctx, sqlFor(n), args...)
	}
	p := padSize(n)
	padded := make([]any, 0, p*k)
	padded = append(padded, args...)
	last := args[len(args)-k:]
	for len(padded) < p*k {
		padded = append(padded, last...)
	}
	return tx.StmtContext(ctx, cached[p]).QueryContext(ctx, padded...)
}

// loadBooks reads the batch's books, a chunk at a time.
func (rs *redeemState) loadBooks(ctx context.Context, tx *sql.Tx, batch []Redemption) error {
	var ids []any
	for i := range batch {
		id := batch[i].Lane.Book
		if _, ok := rs.books[id]; !ok {
			rs.books[id] = nil
			ids = append(ids, hex.EncodeToString(id[:]))
		}
	}
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		var books map[int]*sql.Stmt
		if rs.stmts != nil {
			books = rs.stmts.books
		}
		rows, err := rs.query(ctx, tx, books, rs.db.booksSQL, ids[:n], 1)
		if err != nil {
			return err
		}
		for rows.Next() {
			bk := &bookRow{}
			var saltHex, rootHex string
			if err := rows.Scan(&bk.hex, &bk.vendor, &bk.currency, &bk.unit, &bk.lanes, &bk.length, &saltHex, &rootHex, &bk.released); err != nil {
				rows.Close()
				return err
			}
			var id [32]byte
			if n, err := hex.Decode(id[:], []byte(bk.hex)); err != nil || n != 32 {
				rows.Close()
				return fmt.Errorf("broker: book id %q in the database", bk.hex)
			}
			hex.Decode(bk.salt[:], []byte(saltHex))
			hex.Decode(bk.root[:], []byte(rootHex))
			rs.books[id] = bk
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// loadLanes reads the rows of the batch's lanes of known books, a chunk
// at a time.
func (rs *redeemState) loadLanes(ctx context.Context, tx *sql.Tx, batch []Redemption) error {
	var args []any
	for i := range batch {
		id := batch[i].Lane
		bk := rs.books[id.Book]
		if bk == nil {
			continue
		}
		if _, ok := rs.lanes[id]; !ok {
			rs.lanes[id] = &laneRow{id: id}
			args = append(args, bk.hex, int64(id.Lane))
		}
	}
	for len(args) > 0 {
		n := min(len(args)/2, chunk)
		var lanes map[int]*sql.Stmt
		if rs.stmts != nil {
			lanes = rs.stmts.lanes
		}
		rows, err := rs.query(ctx, tx, lanes, rs.db.lanesSQL, args[:2*n], 2)
		if err != nil {
			return err
		}
		for rows.Next() {
			var bookHex, valueHex string
			var lane, redeemed, reserved, rowid int64
			dest := []any{&bookHex, &lane, &redeemed, &valueHex, &reserved, &rowid}
			if rs.db.dialect != "sqlite" {
				dest = dest[:5]
			}
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return err
			}
			var id coupons.LaneID
			hex.Decode(id.Book[:], []byte(bookHex))
			id.Lane = uint32(lane)
			l := rs.lanes[id]
			if l == nil || lane < 0 || lane > math.MaxUint32 {
				rows.Close()
				return fmt.Errorf("broker: lane %s/%d read but not asked for", bookHex, lane)
			}
			l.exists, l.redeemed, l.reserved, l.rowid = true, redeemed, reserved, rowid
			hex.Decode(l.value[:], []byte(valueHex))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		args = args[2*n:]
	}
	return nil
}

// writeLanes writes the lanes the batch changed: new lanes inserted a
// chunk at a time (a lane inserted meanwhile fails the batch), known
// lanes updated (a chunk at a time on PostgreSQL, one by one on SQLite;
// an update that would take a lane backwards fails the batch).
func (rs *redeemState) writeLanes(ctx context.Context, tx *sql.Tx) error {
	var inserts, updates []*laneRow
	for _, l := range rs.changed {
		if l.exists {
			updates = append(updates, l)
		} else {
			inserts = append(inserts, l)
		}
	}
	write := func(ls []*laneRow, head, tail string, wrap []string) error {
		args := make([]any, 0, 5*min(len(ls), chunk))
		for len(ls) > 0 {
			n := min(len(ls), chunk)
			args = args[:0]
			for _, l := range ls[:n] {
				args = append(args, rs.books[l.id.Book].hex, int64(l.id.Lane), l.redeemed, hex.EncodeToString(l.value[:]), l.reserved)
			}
			var q strings.Builder
			q.WriteString(head)
			rs.db.placeholders(&q, n, 5, wrap)
			q.WriteString(tail)
			res, err := tx.ExecContext(ctx, q.String(), args...)
			if err != nil {
				return err
			}
			if got, err := res.RowsAffected(); err == nil && got != int64(n) {
				return fmt.Errorf("broker: %d of %d lanes written", got, n)
			}
			ls = ls[n:]
		}
		return nil
	}
	if err := write(inserts, `INSERT INTO lanes (book, lane, redeemed, value, reserved) VALUES `, ``, nil); err != nil {
		return err
	}
	if rs.db.dialect == "pgx" {
		// One UPDATE … FROM (VALUES …) per chunk (its columns are
		// column1… by default), that never takes a lane backwards.
		const bigint = "CAST(%s AS BIGINT)"
		return write(updates, `UPDATE lanes SET redeemed = v.column3, value = v.column4, reserved = v.column5 FROM (VALUES `,
			`) AS v WHERE lanes.book = v.column1 AND lanes.lane = v.column2 AND lanes.redeemed <= v.column3`,
			[]string{"", bigint, bigint, "", bigint})
	}
	// What this upsert writes on SQLite (BenchmarkRedeemAtScale with
	// BROKER_SCALE_PROFILE, issue 21): lanes is a rowid table plus its
	// primary key's index (at 1M lanes 35,822 + 21,074 pages of 4 KiB;
	// rows of ~140 bytes, the book id and value in hex). The upsert reads
	// the index and writes only the table (no key changes), so a batch of
	// 1000 lanes drawn uniformly dirties about one table page per lane:
	// ~910 pages written to the WAL at 100k lanes, ~1,120 at 1M (with the
	// ledger's). A WITHOUT ROWID table keyed by (book, lane) would drop the
	// index's reads and 37% of the file, not these writes: any B-tree keyed
	// by lane dirties ~1000 of its leaves per batch once it has many more.
	// Each dirty page is also copied to the statement journal (a temporary
	// file past 64 KiB) and by the checkpoint that follows every batch of
	// this size (wal_autocheckpoint 1000 pages): 11 KB written per lane at
	// 100k, 15–16 KB at 1M. temp_store(MEMORY) with wal_autocheckpoint(8192)
	// cut that to 6.3 and 9.5 KB and ran 100k faster (16–22k lanes/s
	// against 11–16k, alternated) but 1M slower in all four pairs (4.3–10.2k
	// against 5.2–14.3k), so neither is set. A lane's first update after its
	// first redemption also grows its row (SQLite stores the integer 1 in no
	// bytes, 2 in one) in a page the inserts packed full: a page split, 3,400
	// pages per batch at 1M while most updates are such first ones.
	//
	// SQLite plans UPDATE … FROM (VALUES …) as a scan of lanes (measured:
	// 357 ms for 1000 lanes of a million); an upsert probes the key of
	// each row. The upsert that wrote a chunk per statement until then
	// (INSERT … ON CONFLICT (book, lane) DO UPDATE … WHERE lanes.redeemed
	// <= excluded.redeemed) was compiled anew per chunk (5,000 parameters)
	// and, a statement that writes many rows and may fail part way, copied
	// every page it dirtied to the statement journal.
	//
	// So each lane is written by its own UPDATE, compiled once
	// (redeemStmts), by the rowid loadLanes read in this transaction (its
	// key checked too), in rowid order, never backwards: one row per
	// statement, so no statement journal, and no second descent of the
	// primary key's index. With the statements of loadBooks and loadLanes
	// compiled once too (prepared.go), BenchmarkRedeemAtScale alternated
	// with the code before (cpu-ns/op is a batch's thread CPU time; the
	// machine was loaded by a fuzz campaign on both cores, so lanes/s
	// moves with it): at 100k lanes, 36, 42, 46 ms of CPU per batch
	// against 64, 55, 58 (16.4k, 14.2k, 11.7k lanes/s against 7.2k, 13.8k,
	// 12.8k), written 8.7 KB per lane against 12.9; at 1M, 101 and 98 ms
	// against 136 and 151 (5.9k and 5.0k lanes/s against 3.7k and 4.0k),
	// 22.7 KB written per lane against 31.3. With BROKER_SCALE_FIRST=2 (no
	// page splits) at 1M: 77, 69, 51 ms against 78, 88, 73 (6.8k, 7.4k,
	// 7.9k lanes/s against 7.6k, 6.2k, 8.7k: the waits, not the CPU, set
	// lanes/s on that machine), 12.2 KB written per lane against 16.3.
	// The 30k lanes/s of issue 21 (≤ 33 ms per batch) is not reached at
	// 1M. What a batch's CPU goes to there (profile of 20 batches,
	// FIRST=2, 60 ms each): the commit 17 (14 of it the checkpoint that
	// follows every batch), the ledger transfer 15 (8 of it inserting
	// ~1000 entries, one per book, into entries and its two indexes),
	// reading the lanes 12, writing them 9, reading the books 3.5; most
	// of it SQLite's page I/O, a system call per 4 KiB page (reads past
	// its 2 MB cache, dirty pages spilled from it mid-transaction, the
	// WAL's writes, the checkpoint's copies), and with FIRST=1 the splits
	// above.
	if len(updates) == 0 {
		return nil
	}
	// In rowid order: the table's pages in the order of its B-tree.
	slices.SortFunc(updates, func(a, b *laneRow) int { return cmp.Compare(a.rowid, b.rowid) })
	update := tx.StmtContext(ctx, rs.stmts.update)
	for _, l := range updates {
		res, err := update.ExecContext(ctx, l.redeemed, hex.EncodeToString(l.value[:]), l.reserved, l.rowid, rs.books[l.id.Book].hex, int64(l.id.Lane), l.redeemed)
		if err != nil {
			return err
		}
		if got, err := res.RowsAffected(); err == nil && got != 1 {
			return fmt.Errorf("broker: lane %s/%d not written (%d rows)", rs.books[l.id.Book].hex, l.id.Lane, got)
		}
	}
	return nil
}

// itemError marks a refusal of one item (as opposed to a database error),
// with its reason code (RedeemResult.Code).
type itemError struct {
	error
	code string
}

func (e itemError) Unwrap() error { return e.error }

func isItemError(err error) bool {
	var ie itemError
	return errors.As(err, &ie)
}

func refuse(code, format string, args ...any) error {
	return itemError{fmt.Errorf("%w: "+format, append([]any{ErrRedemption}, args...)...), code}
}

func (b *Broker) redeemOne(ctx context.Context, tx *sql.Tx, rs *redeemState, r *Redemption) (RedeemResult, error) {
	res := RedeemResult{Lane: r.Lane}
	bk := rs.books[r.Lane.Book]
	if bk == nil {
		return res, itemError{fmt.Errorf("%w: %x…", ErrUnknownBook, r.Lane.Book[:6]), RedeemUnknownBook}
	}
	v, mine := rs.vendors[bk.vendor]
	vendor := bk.vendor
	switch {
	case !mine:
		return res, itemError{fmt.Errorf("%w: book of %s", ErrNotYourBook, bk.vendor), RedeemNotYourBook}
	case bk.currency != v.currency:
		// Never so for a book registered here (RegisterBook refuses a
		// book in another currency than its vendor's); refused rather
		// than posted across currencies.
		return res, itemError{fmt.Errorf("%w: the book is in %s, vendor %s is paid in %s", ErrCurrency, bk.currency, vendor, v.currency), RedeemCurrencyMismatch}
	case bk.released != 0:
		return res, itemError{ErrBookClosed, RedeemBookClosed}
	case int64(r.Lane.Lane) >= bk.lanes:
		return res, refuse(RedeemLaneOutOfRange, "lane %d of %d", r.Lane.Lane, bk.lanes)
	case int64(r.Index) > bk.length || r.Index == 0:
		return res, refuse(RedeemBadIndex, "index %d outside 1…%d", r.Index, bk.length)
	}

	l := rs.lanes[r.Lane] // loaded for every lane of a known book
	var prev uint32
	var prevValue coupons.Value
	first := !l.exists && !l.changed
	if first {
		if r.Anchor == nil {
			return res, refuse(RedeemBadProof, "first redemption of lane %d needs its anchor and Merkle proof", r.Lane.Lane)
		}
		if err := coupons.VerifyMerkleProof(bk.root, uint32(bk.lanes), r.Lane.Lane, r.Anchor, r.Proof); err != nil {
			return res, itemError{fmt.Errorf("%w: %w", ErrRedemption, err), RedeemBadProof}
		}
		prevValue = *r.Anchor
	} else {
		prev, prevValue = uint32(l.redeemed), l.value
	}
	tag := coupons.NewLaneTag(bk.salt, r.Lane.Lane)
	var err error
	if r.Index <= prev {
		// Already redeemed: pays nothing, not an error.
		if r.Theft != nil {
			res.Theft, err = b.theft(ctx, tx, vendor, bk.hex, &tag, r.Lane, prev, prevValue, r.Theft)
		}
		return res, err
	}
	if r.Index-prev > b.MaxRedeemSteps {
		return res, refuse(RedeemMoreOften, "%d coupons since the last redemption of this lane, limit %d: redeem more often", r.Index-prev, b.MaxRedeemSteps)
	}
	if got := coupons.Walk(&tag, r.Index, r.Value, prev); subtle.ConstantTimeCompare(got[:], prevValue[:]) != 1 {
		return res, refuse(RedeemBadCoupon, "coupon %d does not hash to the lane's last redeemed value", r.Index)
	}
	n := r.Index - prev
	amount, err := coupons.MulAmount(uint64(n), bk.unit)
	if err != nil {
		return res, itemError{err, RedeemRefused}
	}
	fee := amount/10000*b.FeeBasisPoints + amount%10000*b.FeeBasisPoints/10000
	// A reserved lane is paid from its reservation, which holds exactly
	// its unredeemed value.
	fromReserve := min(amount, l.reserved)
	l.redeemed, l.value, l.reserved = int64(r.Index), r.Value, l.reserved-fromReserve
	if !l.changed {
		l.changed = true
		rs.changed = append(rs.changed, l)
	}
	t := rs.totals[r.Lane.Book]
	if t == nil {
		t = &bookTotals{}
		rs.totals[r.Lane.Book] = t
		rs.paidBooks = append(rs.paidBooks, r.Lane.Book)
	}
	t.escrow += amount - fromReserve
	t.reserve += fromReserve
	t.fee += fee
	res.Coupons, res.Amount, res.Fee = n, amount-fee, fee
	if r.Theft != nil {
		res.Theft, err = b.theft(ctx, tx, vendor, bk.hex, &tag, r.Lane, r.Index, r.Value, r.Theft)
	}
	return res, err
}

// ReleaseExpired returns the unspent escrow of every book whose expiry is
// more than ReleaseGrace in the past to its owner, and closes the book to
// further redemptions. Anonymous books are not released: their owner
// claims them (RefundAnonymous). It returns the number of books released.
func (b *Broker) ReleaseExpired(ctx context.Context) (int, error) {
	cutoff := b.Now().Add(-b.ReleaseGrace).Unix()
	rows, err := b.DB.db.QueryContext(ctx, `SELECT id, owner FROM books WHERE released = 0 AND not_after < $1 AND owner NOT LIKE 'anon:%'`, cutoff)
	if err != nil {
		return 0, err
	}
	type due struct{ id, owner string }
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.owner); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, d)
	}
	rows.Close()
	n := 0
	for _, d := range list {
		err := b.tx(ctx, func(tx *sql.Tx) error {
			var bal, res int64
			if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, "escrow:"+d.id).Scan(&bal); err != nil {
				return err
			}
			// The reserve account exists once a lane was reserved.
			err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1`, "reserve:"+d.id).Scan(&res)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if bal+res > 0 {
				if _, err := post(ctx, b.DB, tx, b.Now(), "release", "release:"+d.id, "unspent face value back to the owner",
					entry{"escrow:" + d.id, -bal}, entry{"reserve:" + d.id, -res}, entry{d.owner, bal + res}); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE lanes SET reserved = 0 WHERE book = $1`, d.id); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE books SET released = $1 WHERE id = $2 AND released = 0`, b.Now().Unix(), d.id)
			return err
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
