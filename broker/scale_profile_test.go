package broker

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// profileScale reports whether BROKER_SCALE_PROFILE is set: the scale
// benchmark then logs how its SQLite database is laid out and what one
// batch writes.
func profileScale() bool { return os.Getenv("BROKER_SCALE_PROFILE") != "" }

// profileSQLite logs what a SQLite
// database of the scale benchmark is made of: the PRAGMAs in effect, the
// pages of each table and index (dbstat), and the query plan of the
// lanes' read.
func profileSQLite(b *testing.B, d *DB) {
	for _, p := range []string{"page_size", "cache_size", "synchronous", "journal_mode", "temp_store", "mmap_size", "wal_autocheckpoint", "page_count", "freelist_count"} {
		var v string
		if err := d.db.QueryRowContext(ctx, "PRAGMA "+p).Scan(&v); err != nil {
			b.Logf("PRAGMA %s: %v", p, err)
			continue
		}
		b.Logf("PRAGMA %s = %s", p, v)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT name, count(*), sum(payload), sum(unused) FROM dbstat GROUP BY name ORDER BY count(*) DESC LIMIT 12`)
	if err != nil {
		b.Logf("dbstat: %v", err)
	} else {
		for rows.Next() {
			var name string
			var pages, payload, unused int64
			rows.Scan(&name, &pages, &payload, &unused)
			b.Logf("dbstat %-28s pages %7d payload %10d unused %10d", name, pages, payload, unused)
		}
		rows.Close()
	}
	// (An upsert has no plan to show: it probes the primary key.)
	plan(b, d, `EXPLAIN QUERY PLAN SELECT book, lane, redeemed, value, reserved FROM lanes WHERE (book, lane) IN (VALUES ($1, CAST($2 AS BIGINT)), ($3, CAST($4 AS BIGINT)))`, "x", 1, "y", 2)
	plan(b, d, `EXPLAIN QUERY PLAN `+laneUpdate, 2, "v", 0, 1, "x", 1, 2)
}

func plan(b *testing.B, d *DB, q string, args ...any) {
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		b.Logf("plan: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id, parent, notused int
		var detail string
		rows.Scan(&id, &parent, &notused, &detail)
		b.Logf("plan: %s", detail)
	}
}

// walFrames turns the automatic checkpoint off and returns a function
// that reports the WAL frames (pages) written since, then checkpoints
// and turns it back on as it was.
func walFrames(b *testing.B, d *DB) func() int {
	var auto int
	if err := d.db.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&auto); err != nil {
		b.Fatal(err)
	}
	if _, err := d.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
	if _, err := d.db.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		b.Fatal(err)
	}
	return func() int {
		var busy, log, done int
		if err := d.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &done); err != nil {
			b.Fatal(err)
		}
		if _, err := d.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatal(err)
		}
		if _, err := d.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, auto)); err != nil {
			b.Fatal(err)
		}
		return log
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// writtenBytes is what this process passed to write system calls so far
// (Linux's /proc/self/io wchar), or -1 where it is not known.
func writtenBytes() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
