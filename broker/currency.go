package broker

import "github.com/ecoupons/ecoupons/coupons"

func init() {
	// One key may hold an account in each currency: users are keyed by
	// account (user:<key>:<currency>), no longer by key. The rows of the
	// old table are kept, and so are the accounts in a second currency
	// that RegisterUser opened for a key already registered in another
	// one (the old table had no room for them): each is adopted as a user
	// of the key its id names, with that key's approval.
	addMigration(12, `CREATE TABLE users_by_account (
		account  TEXT PRIMARY KEY REFERENCES accounts(id),
		key_hash TEXT NOT NULL,
		currency TEXT NOT NULL,
		created  BIGINT NOT NULL,
		approved BIGINT NOT NULL DEFAULT 1
	);
	INSERT INTO users_by_account (account, key_hash, currency, created, approved)
		SELECT account, key_hash, currency, created, approved FROM users;
	INSERT INTO users_by_account (account, key_hash, currency, created, approved)
		SELECT a.id, u.key_hash, a.currency, a.created, u.approved FROM accounts a
		JOIN users u ON a.id = 'user:' || substr(u.key_hash, 1, 32) || ':' || a.currency
		WHERE a.kind = 'user' AND a.id NOT IN (SELECT account FROM users);
	DROP TABLE users;
	ALTER TABLE users_by_account RENAME TO users;
	CREATE INDEX users_key ON users(key_hash)`)
}

// money formats an amount in nanos with its currency: "2.048 EUR".
func money(nanos int64, currency string) string {
	return coupons.FormatAmount(nanos) + " " + currency
}
