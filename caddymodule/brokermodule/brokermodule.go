// Package brokermodule is the ecoupons broker as a Caddy module
// (http.handlers.ecoupon_broker, Caddyfile directive ecoupon_broker): it
// serves the broker's API and back office from Caddy. It is apart from
// package caddymodule (the payment gate) because it links the broker's
// ledger and its database drivers (SQLite, PostgreSQL), which a gate does
// not need. Importing it registers the module and the directive; it has
// no other side effect.
package brokermodule

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/broker"
	"github.com/ecoupons/ecoupons/keyfile"
	"github.com/ecoupons/ecoupons/spki"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(BrokerHandler{})
	httpcaddyfile.RegisterHandlerDirective("ecoupon_broker", parseBrokerCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("ecoupon_broker", httpcaddyfile.Before, "respond")
}

// BrokerHandler serves the ecoupons broker's API under /v1/ and its
// back-office pages under /office/, and passes every other request to the
// next handler.
type BrokerHandler struct {
	// KeyFile is the broker's private key (PEM, Ed25519 or ECDSA P-256:
	// PKCS#8, SEC1, or encrypted PKCS#8 with key_passphrase_file), as
	// written by `ecoupons broker init`. Required.
	KeyFile string `json:"key_file,omitempty"`
	// KeyPassphraseFile holds (on its first line) the passphrase of an
	// encrypted key_file.
	KeyPassphraseFile string `json:"key_passphrase_file,omitempty"`
	// Database is the ledger: a SQLite file, or a PostgreSQL URL
	// (postgres://user:password@host:port/db). Default: ecoupons/broker.db
	// in Caddy's data directory.
	Database string `json:"database,omitempty"`
	// AdminKeys are files with the public keys of administrators (a
	// (public-key …) S-expression or PEM "PUBLIC KEY"), who may
	// top up accounts and set credit limits.
	AdminKeys []string `json:"admin_keys,omitempty"`
	// Users is the policy for new user accounts: "open" (default: any key
	// that registers gets an account, and the broker funds its books from
	// what the account holds) or "approve" (a new account is pending, and
	// the broker funds none of its books until an administrator approves it
	// with POST /v1/admin/approve).
	Users string `json:"users,omitempty"`
	// FeeBasisPoints is the fee on redemptions in 1/10000. Default 0.
	FeeBasisPoints int64 `json:"fee_basis_points,omitempty"`
	// ReleaseEvery is how often expired books' escrow is returned to their
	// owners. Default 1h.
	ReleaseEvery caddy.Duration `json:"release_every,omitempty"`
	// RevocationsPerHour is how many revocations one account may make in an
	// hour (broker.Broker.RevocationsPerHour). Default 100.
	RevocationsPerHour int `json:"revocations_per_hour,omitempty"`

	api    *broker.API
	db     *sharedBrokerDB
	stop   context.CancelFunc
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (BrokerHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon_broker", New: func() caddy.Module { return new(BrokerHandler) }}
}

var brokerDBPool = caddy.NewUsagePool()

type brokerDBHandle struct{ *broker.DB }

// Destruct closes the ledger once no config uses it.
func (h brokerDBHandle) Destruct() error { return h.DB.Close() }

type sharedBrokerDB struct {
	*broker.DB
	key string
}

// Provision checks the configuration (check), then loads the keys, opens
// the ledger and starts the release loop: a configuration Validate would
// reject creates no file and starts no goroutine.
func (h *BrokerHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.ReleaseEvery == 0 {
		h.ReleaseEvery = caddy.Duration(time.Hour)
	}
	if err := h.check(); err != nil {
		return err
	}
	signer, err := keyfile.ReadPrivate(h.KeyFile, h.KeyPassphraseFile)
	if err != nil {
		return fmt.Errorf("ecoupon_broker: key: %w", err)
	}
	var admins []spki.KeyHash
	for _, f := range h.AdminKeys {
		pk, err := loadPublicKey(f)
		if err != nil {
			return fmt.Errorf("ecoupon_broker: admin_key %s: %w", f, err)
		}
		admins = append(admins, pk.Hash())
	}
	// Every file read so far is the user's; from here on, files are made.
	if h.Database == "" {
		h.Database = filepath.Join(caddy.AppDataDir(), "ecoupons", "broker.db")
	}
	path := h.Database
	if !strings.HasPrefix(path, "postgres://") && !strings.HasPrefix(path, "postgresql://") {
		if path, err = filepath.Abs(h.Database); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("ecoupon_broker: %w", err)
		}
	}
	v, _, err := brokerDBPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		db, err := broker.Open(context.Background(), path)
		if err != nil {
			return nil, err
		}
		return brokerDBHandle{db}, nil
	})
	if err != nil {
		return fmt.Errorf("ecoupon_broker: database: %w", err)
	}
	h.db = &sharedBrokerDB{DB: v.(brokerDBHandle).DB, key: path}
	b, err := broker.New(h.db.DB, signer)
	if err != nil {
		return err
	}
	b.FeeBasisPoints = h.FeeBasisPoints
	b.RevocationsPerHour = h.RevocationsPerHour
	b.ApproveUsers = h.Users == "approve"
	h.api = &broker.API{Broker: b, Admins: admins}
	runCtx, stop := context.WithCancel(context.Background())
	h.stop = stop
	go func() {
		t := time.NewTicker(time.Duration(h.ReleaseEvery))
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if n, err := b.ReleaseExpired(runCtx); err != nil {
					h.logger.Error("releasing expired books", zap.Error(err))
				} else if n > 0 {
					h.logger.Info("released expired books", zap.Int("books", n))
				}
			}
		}
	}()
	return nil
}

// Validate checks the configuration (check, which Provision already ran
// before opening anything).
func (h *BrokerHandler) Validate() error { return h.check() }

// check rejects configurations that cannot work. It needs nothing but the
// options: no file is read, created or opened.
func (h *BrokerHandler) check() error {
	if h.KeyFile == "" {
		return fmt.Errorf("ecoupon_broker: key is required (create one with 'ecoupons broker init')")
	}
	if h.Users != "" && h.Users != "open" && h.Users != "approve" {
		return fmt.Errorf("ecoupon_broker: users must be open or approve, got %q", h.Users)
	}
	if h.RevocationsPerHour < 0 {
		return fmt.Errorf("ecoupon_broker: revocations_per_hour must be positive, got %d", h.RevocationsPerHour)
	}
	if h.FeeBasisPoints < 0 || h.FeeBasisPoints > 10000 {
		return fmt.Errorf("ecoupon_broker: fee %d basis points is outside 0…10000", h.FeeBasisPoints)
	}
	if h.ReleaseEvery < caddy.Duration(time.Second) {
		return fmt.Errorf("ecoupon_broker: release_every must be at least 1s")
	}
	return nil
}

// Cleanup stops the release loop and releases the database.
func (h *BrokerHandler) Cleanup() error {
	if h.stop != nil {
		h.stop()
	}
	if h.db != nil {
		_, err := brokerDBPool.Delete(h.db.key)
		return err
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *BrokerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, broker.OfficePath) {
		h.api.ServeHTTP(w, r)
		return nil
	}
	return next.ServeHTTP(w, r)
}

// parseBrokerCaddyfile:
//
//	ecoupon_broker {
//	    key           <pem file>
//	    key_passphrase_file <file>
//	    database      <sqlite file>
//	    admin_key     <file>        # repeatable
//	    users         open|approve  # default open
//	    fee           <basis points>
//	    release_every <duration>
//	    revocations_per_hour <n>  # default 100
//	}
func parseBrokerCaddyfile(hp httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h := new(BrokerHandler)
	return h, h.UnmarshalCaddyfile(hp.Dispenser)
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (h *BrokerHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		key := d.Val()
		args := d.RemainingArgs()
		if len(args) != 1 {
			return d.Errf("%s takes exactly one value", key)
		}
		switch key {
		case "key":
			h.KeyFile = args[0]
		case "database":
			h.Database = args[0]
		case "key_passphrase_file":
			h.KeyPassphraseFile = args[0]
		case "admin_key":
			h.AdminKeys = append(h.AdminKeys, args[0])
		case "users":
			if args[0] != "open" && args[0] != "approve" {
				return d.Errf("users must be open or approve, got %q", args[0])
			}
			h.Users = args[0]
		case "fee":
			var n int64
			if _, err := fmt.Sscan(args[0], &n); err != nil || n < 0 || n > 10000 {
				return d.Errf("fee is in basis points, 0 to 10000, got %q", args[0])
			}
			h.FeeBasisPoints = n
		case "revocations_per_hour":
			var n int
			if _, err := fmt.Sscan(args[0], &n); err != nil || n < 1 || n > 1_000_000 {
				return d.Errf("revocations_per_hour is a number of revocations, 1 to 1000000, got %q", args[0])
			}
			h.RevocationsPerHour = n
		case "release_every":
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < time.Second {
				return d.Errf("release_every must be a duration of at least 1s, got %q", args[0])
			}
			h.ReleaseEvery = caddy.Duration(dur)
		default:
			return d.Errf("unknown ecoupon_broker option %q", key)
		}
	}
	return nil
}

var (
	_ caddy.Provisioner           = (*BrokerHandler)(nil)
	_ caddy.Validator             = (*BrokerHandler)(nil)
	_ caddy.CleanerUpper          = (*BrokerHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*BrokerHandler)(nil)
	_ caddyfile.Unmarshaler       = (*BrokerHandler)(nil)
)

// loadPublicKey reads a public key file: a (public-key …) S-expression in
// any form, or PEM "PUBLIC KEY" (keyfile.ParsePublic).
func loadPublicKey(path string) (*spki.PublicKey, error) { return keyfile.ReadPublic(path) }
