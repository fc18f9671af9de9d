// Package caddymodule holds ecoupons' Caddy modules: the payment gate
// (http.handlers.ecoupon, Caddyfile directive ecoupon) and its spent-state
// stores (http.handlers.ecoupon.stores.*). Importing it registers the
// modules and the directive; it has no other side effect.
package caddymodule

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/blindfund"
	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/caddymodule/browserwallet"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/keyfile"
	"github.com/ecoupons/ecoupons/lanes"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Gate{})
}

// OpenPath is where clients may POST lane-open documents too large for a
// header (the Caddyfile directive routes /.well-known/ecoupons/* to the
// gate whatever its matcher; in JSON, the route's matcher must include it).
const OpenPath = "/.well-known/ecoupons/open"

// HeaderOpen carries a lane-open document (any S-expression form,
// typically transport) next to the first payment on a lane.
const HeaderOpen = "ECoupon-Open"

// DefaultLease is the spending lease of a route that sets none: at the
// default coupon value (0.001 EUR), a gate's crash costs a reader at most
// 0.031 EUR per lane it was paying on, and the gate stores about one
// coupon in 32 before serving it.
const DefaultLease = 32

// Response headers of paid requests.
const (
	HeaderBalance = "ECoupon-Balance" // coupons left on the lane
	HeaderCredit  = "ECoupon-Credit"  // coupons the lane is owed (upstream failures, overpayment)
)

// Gate is the payment gate. A request without a valid payment gets 402
// Payment Required with a challenge; a request paid with the next coupons
// of an opened lane goes on to the next handler.
type Gate struct {
	// Vendor is the name books must be made out to (a lower-case host name,
	// e.g. news.example). Required.
	Vendor string `json:"vendor,omitempty"`
	// Broker is the broker's base URL, advertised in the challenge so that
	// clients know where to buy books. Optional. The gate's signed
	// requests there name the broker's key: the one of BrokerKeys, or with
	// several, the one the broker's GET /v1/broker answers, which must be
	// among them.
	Broker string `json:"broker,omitempty"`
	// BrokerKeys are files holding the public keys of the brokers whose
	// users this gate accepts, each a (public-key …) S-expression in any
	// form. At least one is required.
	BrokerKeys []string `json:"broker_keys,omitempty"`
	// Price is the number of coupons one request costs. Default 1.
	Price uint32 `json:"price,omitempty"`
	// Unit is the value of one coupon, a decimal of the currency's major
	// unit; books with another unit are refused. Default "0.001".
	Unit string `json:"unit,omitempty"`
	// Currency is the ISO 4217 code of the unit. Default "EUR".
	Currency string `json:"currency,omitempty"`
	// PaymentPage is an HTML template file for the 402 page a browser's
	// navigation gets (Go html/template; its data: Vendor, Broker, Price,
	// Unit, Currency, Amount, URL, Origin, Path, Nonce). Default: a
	// built-in page saying what the resource costs and how to pay.
	PaymentPage string `json:"payment_page,omitempty"`
	// CORSOrigins are the origins (scheme://host[:port]) whose web apps
	// may pay: their requests get Access-Control-Allow-Origin and the
	// gate's headers exposed, their preflights are answered without
	// payment. "*" allows every origin. Default: none.
	CORSOrigins []string `json:"cors_origins,omitempty"`
	// Name names the route in the gate's metrics (the route label of
	// ecoupons_gate_coupons_total and ecoupons_gate_revenue_total): letters,
	// digits, '-', '_' and '.', at most 64. Default: none (an empty label).
	Name string `json:"name,omitempty"`
	// StoreRaw is the spent-state store module. Default: bolt, in
	// ecoupons/<vendor>.db under Caddy's data directory.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=http.handlers.ecoupon.stores inline_key=backend"`
	// Mode is the validation mode of lane opens. "offline" (the default):
	// every check is local, the broker is never asked. "semi": as offline,
	// and the broker is asked once per lane open whether the book is
	// registered there (its face value held), unreleased and unexpired,
	// whether anything the lane opens under is revoked now, and how far the
	// lane was already redeemed (the gate starts the lane there). "online":
	// as semi, and the broker reserves the lane's unredeemed value for this
	// gate, pinning the lane to it (gates with their own stores cannot both
	// accept it). semi and online need broker and vendor_key; while the
	// broker cannot be reached, lane opens get 503 (lanes already open keep
	// working).
	Mode string `json:"mode,omitempty"`
	// BrokerTimeout bounds one question to the broker in the semi and
	// online modes. Default 10s.
	BrokerTimeout caddy.Duration `json:"broker_timeout,omitempty"`
	// MaxJump bounds how far one payment may move a lane (coupons), so that
	// a forged large index cannot burn CPU. Default 1024 (and at least Price).
	MaxJump uint32 `json:"max_jump,omitempty"`
	// OpensPerMinute limits lane opens per client per minute: per IPv4
	// address, per IPv6 prefix of IPv6Prefix bits. Default 30.
	OpensPerMinute int `json:"opens_per_minute,omitempty"`
	// IPv6Prefix is the length of the IPv6 prefixes that the per-client
	// limits (opens_per_minute, and the long walks after a takeover) count
	// as one client: one host usually holds a whole /64. 1 to 128; default
	// 64.
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
	// MaxOpenBytes bounds a lane-open document, in a header or a POST body.
	// Default 65536.
	MaxOpenBytes int `json:"max_open_bytes,omitempty"`
	// MaxBody bounds the body of a paid request, which the gate reads to
	// check it against its Content-Digest and bind it to the payment
	// (docs/PROTOCOL.md §10); larger bodies get 413 body_too_large and
	// spend no coupon. Default 1048576 (1 MiB).
	MaxBody int64 `json:"max_body,omitempty"`
	// LaneRate limits paid requests per lane per second (with a burst of the
	// same size); excess requests get 429 with Retry-After and spend no
	// coupon. Default 20; negative disables.
	LaneRate float64 `json:"lane_rate,omitempty"`
	// LaneCache is how many lanes the gate keeps in memory (a cached lane
	// is verified without reading the store; each takes about 800 bytes).
	// Default 131072 (about 100 MiB).
	LaneCache int `json:"lane_cache,omitempty"`
	// NonceTTL is how long a challenge nonce stays valid (at least this, at
	// most twice). Default 5m.
	NonceTTL caddy.Duration `json:"nonce_ttl,omitempty"`
	// Revocations are the brokers' signed revocation lists, each an http(s)
	// URL (e.g. https://broker.example/v1/revocations) or a file, verified
	// against the broker keys. When set, lane opens are refused under any
	// revoked certificate or key, and refused altogether (503) while the
	// list of the book's broker is past its next-update; and every list
	// installed stops the lanes already open under a certificate or key it
	// revokes, at their next payment (402 revoked), marking them so in the
	// store for every gate sharing it. Default: none.
	Revocations []string `json:"revocations,omitempty"`
	// Denominations are where the gate reads its brokers' denominations
	// of anonymous books (their blind-signing keys, each certified by a
	// broker key): http(s) URLs or files holding a GET /v1/denominations
	// answer. They are read when a lane open names a denomination the gate
	// does not know yet (at most every 5s). Default: the broker's
	// /v1/denominations when broker is set; without either, anonymous
	// books are refused (book_not_funded).
	Denominations []string `json:"denominations,omitempty"`
	// RevocationsEvery is how often the lists are fetched. Default 1m.
	RevocationsEvery caddy.Duration `json:"revocations_every,omitempty"`
	// VendorKey is a PEM file with the vendor's private key (Ed25519 or
	// ECDSA P-256). When set, paid responses carry an ECoupon-Receipt
	// (TESLA, under a key chain whose commitment this key signs, served at
	// /.well-known/ecoupons/vendor). Default: no receipts.
	VendorKey string `json:"vendor_key,omitempty"`
	// VendorKeyPassphraseFile holds (on its first line) the passphrase of
	// an encrypted vendor_key (PKCS#8 with PBKDF2 or scrypt).
	VendorKeyPassphraseFile string `json:"vendor_key_passphrase_file,omitempty"`
	// ReceiptInterval is the TESLA interval of receipts. Default 1s.
	ReceiptInterval caddy.Duration `json:"receipt_interval,omitempty"`
	// ReceiptDelay is how many intervals later a receipt's key is
	// disclosed. Default 2.
	ReceiptDelay uint64 `json:"receipt_delay,omitempty"`
	// RedeemEvery is how often accepted coupons are redeemed at the broker
	// (signed with vendor_key, sent to broker). Default 1m; redemption runs
	// only when both broker and vendor_key are set.
	RedeemEvery caddy.Duration `json:"redeem_every,omitempty"`
	// Lease is the spending lease, in coupons, of stores one process owns
	// (bolt, the default): a payment past a lane's durable reservation
	// reserves this many coupons in one durable write, and the next ones
	// up to it are accepted from memory, their exact position written
	// within a second. After a crash every lane resumes past its
	// reservation, so no coupon is accepted twice, and a reader whose
	// lane was paying when the gate crashed loses at most lease-1 coupons
	// (the wallet skips them, within the lease the challenge advertises).
	// 1: every coupon is durable before its request is served. Shared
	// stores (redis) always store every coupon. Default 32.
	Lease uint32 `json:"lease,omitempty"`
	// Meter, when set, meters the response instead of charging per
	// request: price is then the coupons of one unit (so many bytes, SSE
	// events or seconds), a payment pre-pays a window of units, and
	// clients top up on the same lane while the response flows
	// (docs/PROTOCOL.md §14 Sessions). Default: none (charged per
	// request).
	Meter *MeterConfig `json:"meter,omitempty"`
	// SecretFile holds the key of challenge nonces (created with 32 random
	// bytes if missing). Default: ecoupons/<vendor>.secret in Caddy's data
	// directory.
	SecretFile string `json:"secret_file,omitempty"`

	brokers []*spki.PublicKey
	// denoms verifies anonymous books' blind funding proofs.
	denoms *denominations
	// anonHeld are the anonymous books registered at the broker by this
	// process (book ID → struct{}).
	anonHeld *sync.Map
	unit     int64
	store    store.Store
	sigs     *sigCache
	nonces   *nonceMaker
	// core accepts the payments (lanes.Core): lane cache, rate limits,
	// verification, compare-and-set, refunds, leases.
	core  *lanes.Core
	opens *ipWindow
	// longWalks limits payments allowed past max_jump after a takeover.
	longWalks *ipWindow
	revoked   *revocations
	receipts  *receipts

	vendorSigner crypto.Signer
	aud          *audience   // the broker's key hash, once asked (brokerAudience)
	holder       string      // this gate's spent state at the broker (online mode): the store's ID
	vendorHash   [32]byte    // SHA-256 of Vendor, kept with each lane
	thefts       *theftQueue // evidence waiting for its lane's next redemption
	httpClient   *http.Client
	stopRedeem   func() // stops the redemption worker and waits for it to end
	stopPoll     context.CancelFunc
	logger       *zap.Logger
	now          func() time.Time // a test's clock; nil: time.Now (clock)
	redeemClock  func() time.Time // the redemption worker's clock (nil: time.Now)
	challenge    challenge
	pay          *paymentScheme // the Payment scheme (paymentscheme.go)

	// Metric children of this vendor, resolved once (hot path).
	mAccepted prometheus.Counter
	mHit      prometheus.Counter
	mMiss     prometheus.Counter
	mDelay    prometheus.Observer
	page402   *template.Template // the HTML 402 page
	corsAny   bool               // cors_origins "*"
	mCoupons  prometheus.Counter // coupons kept for served requests, this route
	mRevenue  prometheus.Counter // their value in currency units
	revenue   float64            // the value of one request's coupons
}

// CaddyModule returns the Caddy module information.
func (Gate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.ecoupon", New: func() caddy.Module { return new(Gate) }}
}

// Provision applies the defaults and checks the configuration (check), and
// only then loads keys, creates the secret file, opens the store, builds
// the caches and starts the redemption and revocation workers: a
// configuration Validate would reject creates no file, opens no store and
// starts no goroutine.
func (g *Gate) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	g.defaults()
	if err := g.check(); err != nil {
		return err
	}
	initMetrics(ctx.GetMetricsRegistry())
	g.now = nil // time.Now (clock)
	g.vendorHash = sha256.Sum256([]byte(g.Vendor))
	g.thefts = new(theftQueue)
	var err error
	if g.unit, err = coupons.ParseAmount(g.Unit); err != nil {
		return fmt.Errorf("ecoupon: unit: %w", err)
	}
	g.aud = &audience{}
	for _, path := range g.BrokerKeys {
		k, err := loadPublicKey(path)
		if err != nil {
			return fmt.Errorf("ecoupon: broker_key %s: %w", path, err)
		}
		g.brokers = append(g.brokers, k)
	}
	var signer crypto.Signer
	if g.VendorKey != "" {
		var err error
		if signer, err = keyfile.ReadPrivate(g.VendorKey, g.VendorKeyPassphraseFile); err != nil {
			return fmt.Errorf("ecoupon: vendor_key: %w", err)
		}
	}
	// The store module is loaded (and validated: a redis store without a
	// URL fails here) but opened only once the secret file exists.
	dataDir := g.dataDir()
	var provider StoreProvider = &BoltStore{Path: filepath.Join(dataDir, g.Vendor+".db")}
	if g.StoreRaw != nil {
		mod, err := ctx.LoadModule(g, "StoreRaw")
		if err != nil {
			return fmt.Errorf("ecoupon: loading store: %w", err)
		}
		provider = mod.(StoreProvider)
		if b, ok := provider.(*BoltStore); ok && b.Path == "" {
			b.Path = filepath.Join(dataDir, g.Vendor+".db") // `store bolt` alone, or with options only
		}
		if p, ok := provider.(*PebbleStore); ok && p.Path == "" {
			p.Path = filepath.Join(dataDir, g.Vendor+".pebble")
		}
	}
	// Every file read so far is the user's; from here on, files are made.
	secret, err := loadOrCreateSecret(g.SecretFile)
	if err != nil {
		return fmt.Errorf("ecoupon: secret_file: %w", err)
	}
	g.nonces = &nonceMaker{secret: secret, vendor: g.Vendor, ttl: time.Duration(g.NonceTTL), now: g.clock}
	g.opens = newIPWindow(g.OpensPerMinute, time.Minute, g.IPv6Prefix)
	g.longWalks = newIPWindow(longWalksPerMinute, time.Minute, g.IPv6Prefix)
	if signer != nil {
		g.vendorSigner = signer
		if g.receipts, err = newReceipts(signer, g.Vendor, secret, time.Duration(g.ReceiptInterval), g.ReceiptDelay, g.clock); err != nil {
			return fmt.Errorf("ecoupon: receipts: %w", err)
		}
	}

	if g.store, err = provider.OpenStore(ctx); err != nil {
		return fmt.Errorf("ecoupon: opening store: %w", err)
	}
	if g.page402, err = loadPage402(g.PaymentPage); err != nil {
		return err
	}
	g.corsAny = len(g.CORSOrigins) == 1 && g.CORSOrigins[0] == "*"
	// The store's identity: in online mode the broker pins each reserved
	// lane to it (gates sharing the store share the lanes, others are
	// refused them); every challenge names it (hashed), so that a wallet
	// keeps each lane at the store it was opened at.
	storeID, err := g.store.ID(ctx)
	if err != nil {
		return fmt.Errorf("ecoupon: the store's identity: %w", err)
	}
	if g.Mode == ModeOnline {
		g.holder = storeID
	}
	if g.sigs, err = newSigCache(); err != nil {
		return err
	}
	g.denoms = g.newDenominations()
	g.anonHeld = new(sync.Map)
	if g.Broker != "" && g.vendorSigner != nil {
		g.httpClient = &http.Client{Timeout: 30 * time.Second}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		g.stopRedeem = func() { stop(); <-done }
		go func() {
			defer close(done)
			g.redeemLoop(runCtx)
		}()
	} else {
		g.logger.Info("coupons are not redeemed by this gate: set both broker and vendor_key to redeem them")
	}
	g.mAccepted = gateMetrics.payments.WithLabelValues(g.Vendor, "accepted")
	g.mHit = gateMetrics.cache.WithLabelValues(g.Vendor, "hit")
	g.mMiss = gateMetrics.cache.WithLabelValues(g.Vendor, "miss")
	g.mDelay = gateMetrics.verifyDelay.WithLabelValues(g.Vendor)
	g.mCoupons = gateMetrics.coupons.WithLabelValues(g.Vendor, g.Name)
	g.mRevenue = gateMetrics.revenue.WithLabelValues(g.Vendor, g.Name, g.Currency)
	g.revenue = float64(g.Price) * float64(g.unit) / 1e9
	if len(g.Revocations) > 0 {
		// The newest lists are kept beside the secret, for the next start.
		g.revoked = newRevocations(g.Revocations, g.brokers, filepath.Join(filepath.Dir(g.SecretFile), g.Vendor+".revocations"), g.logger)
		// A first fetch before serving; failures are logged and retried by
		// the poller, and lane opens wait for a fresh list.
		first, cancel := context.WithTimeout(ctx, 15*time.Second)
		failed := g.revoked.refresh(first) != nil
		cancel()
		pollCtx, stop := context.WithCancel(context.Background())
		g.stopPoll = stop
		go g.revoked.poll(pollCtx, time.Duration(g.RevocationsEvery), failed)
	}
	g.challenge = challenge{Realm: g.Vendor, Vendor: g.Vendor, Price: g.Price, Unit: coupons.FormatAmount(g.unit), Currency: g.Currency, Broker: g.Broker,
		Store: publicStoreID(storeID)}
	if m := g.meter(); m != nil {
		g.challenge.Meter, g.challenge.Window = m.String(), g.Meter.Window
	}
	// The Payment scheme beside ECoupon (paymentscheme.go).
	if g.pay, err = newPaymentScheme(secret, &g.challenge, time.Duration(g.NonceTTL), g.logger); err != nil {
		return fmt.Errorf("ecoupon: payment scheme: %w", err)
	}
	g.challenge.pay = g.pay
	if g.core, err = g.newCore(); err != nil {
		return err
	}
	return nil
}

// newCore makes the gate's acceptance core on its store and settings.
func (g *Gate) newCore() (*lanes.Core, error) {
	lease := uint32(1)
	if holdsLeases(g.store) {
		if g.Lease == 0 {
			g.Lease = DefaultLease
		}
		lease = g.Lease
		g.challenge.Lease = lease
	} else if g.Lease > 1 {
		g.logger.Info("spending leases need a store one process owns (bolt): every coupon is stored before it is accepted",
			zap.Uint32("lease", g.Lease))
	}
	cfg := lanes.Config{Price: g.Price, MaxJump: g.MaxJump, Lease: lease, LaneRate: g.LaneRate, CacheLanes: g.LaneCache, Check: g.checkLane,
		Hit: g.mHit, Miss: g.mMiss, Now: g.clock,
		OnRevoked: func(id coupons.LaneID) {
			gateMetrics.revokedLanes.WithLabelValues(g.Vendor).Inc()
			g.logger.Info("a lane's delegation was revoked: the lane takes no more payments under it", zap.String("lane", id.String()))
		}}
	if g.revoked != nil {
		cfg.Revocations = g.revoked
	}
	core, err := lanes.New(g.store, cfg)
	if err != nil {
		return nil, fmt.Errorf("ecoupon: %w", err)
	}
	return core, nil
}

// clock is the gate's time: a test's clock (now), or time.Now.
func (g *Gate) clock() time.Time {
	if g.now != nil {
		return g.now()
	}
	return time.Now()
}

// clockAt is the gate's time at the real time t (from time.Now): t
// itself, unless a test set the clock.
func (g *Gate) clockAt(t time.Time) time.Time {
	if g.now != nil {
		return g.now()
	}
	return t
}

// holdsLeases reports whether st keeps spending leases (store.Leased): a
// store one process owns, whose lanes may accept coupons from memory
// within a durable reservation.
func holdsLeases(st store.Store) bool {
	_, ok := st.(interface{ HoldsLeases() bool })
	return ok
}

// dataDir is the gate's directory in Caddy's data directory, where the
// default secret file, store and revocation lists live.
func (g *Gate) dataDir() string { return filepath.Join(caddy.AppDataDir(), "ecoupons") }

// defaults fills in the unset options. It touches nothing but g.
func (g *Gate) defaults() {
	if g.Price == 0 {
		g.Price = 1
	}
	if g.Unit == "" {
		g.Unit = "0.001"
	}
	if g.Currency == "" {
		g.Currency = "EUR"
	}
	if g.Mode == "" {
		g.Mode = ModeOffline
	}
	if g.BrokerTimeout == 0 {
		g.BrokerTimeout = caddy.Duration(10 * time.Second)
	}
	if g.MaxJump == 0 {
		g.MaxJump = max(1024, g.Price)
	}
	if g.OpensPerMinute == 0 {
		g.OpensPerMinute = 30
	}
	if g.IPv6Prefix == 0 {
		g.IPv6Prefix = 64
	}
	if g.MaxOpenBytes == 0 {
		g.MaxOpenBytes = 64 << 10
	}
	if g.MaxBody == 0 {
		g.MaxBody = 1 << 20
	}
	if g.LaneRate == 0 {
		g.LaneRate = 20
	}
	if g.NonceTTL == 0 {
		g.NonceTTL = caddy.Duration(5 * time.Minute)
	}
	if g.VendorKey != "" {
		if g.ReceiptInterval == 0 {
			g.ReceiptInterval = caddy.Duration(time.Second)
		}
		if g.ReceiptDelay == 0 {
			g.ReceiptDelay = 2
		}
	}
	if g.RedeemEvery == 0 {
		g.RedeemEvery = caddy.Duration(time.Minute)
	}
	if len(g.Revocations) > 0 && g.RevocationsEvery == 0 {
		g.RevocationsEvery = caddy.Duration(time.Minute)
	}
	if g.Meter != nil {
		g.Meter.defaults()
	}
	if g.SecretFile == "" && g.Vendor != "" {
		g.SecretFile = filepath.Join(g.dataDir(), g.Vendor+".secret")
	}
}

// check rejects configurations that cannot work, saying what to write. It
// needs nothing but the options (after defaults): no file is read, created
// or opened, so Provision runs it before anything else, and Validate runs
// it again.
// validRouteName reports whether name may label the route's metrics.
func validRouteName(name string) bool {
	if len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (g *Gate) check() error {
	switch {
	case g.Vendor == "" || strings.ToLower(g.Vendor) != g.Vendor || strings.ContainsAny(g.Vendor, " /:\\|"):
		return fmt.Errorf("ecoupon: vendor %q must be a lower-case host name, e.g. 'vendor news.example'", g.Vendor)
	case len(g.BrokerKeys) == 0:
		return fmt.Errorf("ecoupon: no broker key: add 'broker_key /path/to/broker.pub' (the broker's (public-key …))")
	case g.Mode != ModeOffline && g.Mode != ModeSemi && g.Mode != ModeOnline:
		return fmt.Errorf("ecoupon: mode %q: write 'mode offline' (the default), 'mode semi' or 'mode online'", g.Mode)
	case g.Mode != ModeOffline && (g.Broker == "" || g.VendorKey == ""):
		return fmt.Errorf("ecoupon: mode %s asks the broker at every lane open: set 'broker https://…' and 'vendor_key /path/to/vendor.pem' (the key registered at the broker)", g.Mode)
	case g.BrokerTimeout < caddy.Duration(100*time.Millisecond):
		return fmt.Errorf("ecoupon: broker_timeout must be at least 100ms")
	case g.MaxJump < g.Price:
		return fmt.Errorf("ecoupon: max_jump %d is below the price %d: no payment could pass", g.MaxJump, g.Price)
	case g.IPv6Prefix < 1 || g.IPv6Prefix > 128:
		return fmt.Errorf("ecoupon: ipv6_prefix must be 1 to 128 bits, got %d", g.IPv6Prefix)
	case g.NonceTTL < 0:
		return fmt.Errorf("ecoupon: nonce_ttl must be a positive duration, e.g. 5m")
	case g.RevocationsEvery < 0 || (len(g.Revocations) > 0 && time.Duration(g.RevocationsEvery) < time.Second):
		return fmt.Errorf("ecoupon: revocations_every must be at least 1s")
	case g.RedeemEvery < caddy.Duration(time.Second):
		return fmt.Errorf("ecoupon: redeem_every must be at least 1s")
	case g.VendorKey != "" && g.ReceiptInterval < caddy.Duration(10*time.Millisecond):
		return fmt.Errorf("ecoupon: receipt_interval must be at least 10ms")
	case g.MaxOpenBytes < 1024:
		return fmt.Errorf("ecoupon: max_open_bytes %d is too small for any lane open (at least 1024)", g.MaxOpenBytes)
	case g.MaxBody < 0:
		return fmt.Errorf("ecoupon: max_body must be positive")
	case g.LaneCache < 0:
		return fmt.Errorf("ecoupon: lane_cache must be a positive number of lanes")
	case checkCORSOrigins(g.CORSOrigins) != nil:
		return checkCORSOrigins(g.CORSOrigins)
	case !validRouteName(g.Name):
		return fmt.Errorf("ecoupon: name %q: a route name is at most 64 letters, digits, '-', '_' or '.'", g.Name)
	}
	if err := g.checkMeter(); err != nil {
		return err
	}
	unit, err := coupons.ParseAmount(g.Unit)
	if err != nil {
		return fmt.Errorf("ecoupon: unit: %w", err)
	}
	if unit <= 0 {
		return fmt.Errorf("ecoupon: unit must be positive, e.g. 'unit 0.001 EUR'")
	}
	if err := coupons.CheckCurrency(g.Currency); err != nil {
		return fmt.Errorf("ecoupon: currency: %w (e.g. 'unit 0.001 EUR')", err)
	}
	if g.Broker != "" {
		if !strings.HasPrefix(g.Broker, "https://") && !strings.HasPrefix(g.Broker, "http://") {
			return fmt.Errorf("ecoupon: broker %q must be an http(s) URL", g.Broker)
		}
	}
	return nil
}

// Validate rejects configurations that cannot work, saying what to write
// (check, which Provision already ran before opening anything).
func (g *Gate) Validate() error { return g.check() }

// Cleanup closes what Provision opened.
func (g *Gate) Cleanup() error {
	if g.stopPoll != nil {
		g.stopPoll()
	}
	if g.stopRedeem != nil {
		g.stopRedeem()
	}
	if g.core != nil {
		g.core.Close()
	}
	if g.sigs != nil {
		g.sigs.Close()
	}
	if g.store != nil {
		return g.store.Close()
	}
	return nil
}

// reasonFor maps verification errors to the reason codes of 402 answers.
func reasonFor(err error) string {
	for _, m := range []struct {
		err  error
		code string
	}{
		{coupons.ErrReplay, coupons.CodeCouponSpent},
		{coupons.ErrJumpTooLarge, coupons.CodeIndexJumpTooLarge},
		{coupons.ErrBeyondLane, coupons.CodeBeyondLane},
		{coupons.ErrBadCoupon, coupons.CodeBadCoupon},
		{coupons.ErrCapExceeded, coupons.CodeCapExceeded},
		{blindfund.ErrUnknownDenomination, coupons.CodeUnknownDenomination},
		{blindfund.ErrWrongDenomination, coupons.CodeWrongDenomination},
		{blindfund.ErrKeyExpired, coupons.CodeDenominationExpired},
		{blindfund.ErrBadSignature, coupons.CodeBadBlindSignature},
		{coupons.ErrBookNotFunded, coupons.CodeBookNotFunded},
		{coupons.ErrWrongVendor, coupons.CodeWrongVendor},
		{coupons.ErrBookExpired, coupons.CodeBookExpired},
		{coupons.ErrUntrustedBroker, coupons.CodeUntrustedBroker},
		{coupons.ErrOwnerNotCertified, coupons.CodeOwnerNotCertified},
		{coupons.ErrGrantWider, coupons.CodeGrantWiderThanParent},
		{coupons.ErrNotAuthorized, coupons.CodeNotAuthorized},
		{coupons.ErrRevoked, coupons.CodeRevoked},
		{coupons.ErrLaneOutOfRange, coupons.CodeLaneOutOfRange},
		{coupons.ErrBadOpenSignature, coupons.CodeBadOpenSignature},
		{coupons.ErrBadNonce, coupons.CodeBadNonce},
		{coupons.ErrBadProof, coupons.CodeBadMerkleProof},
		{coupons.ErrBadBook, coupons.CodeBadBook},
		{coupons.ErrBadOpen, coupons.CodeBadOpen}, // parsed, but inconsistent
	} {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return coupons.CodePaymentRefused
}

// refuse counts a refused payment and answers 402.
func (g *Gate) refuse(w http.ResponseWriter, code, reason string) {
	gateMetrics.payments.WithLabelValues(g.Vendor, code).Inc()
	g.payRequired(w, code, reason, hintPay)
}

// payRequired answers 402 with a fresh challenge.
func (g *Gate) payRequired(w http.ResponseWriter, code, reason, hint string) {
	c := g.challenge
	c.Error, c.Reason, c.Nonce, c.Hint = code, reason, g.nonces.issue(), hint
	w.Header().Set("WWW-Authenticate", c.header())
	writeJSON(w, http.StatusPaymentRequired, c)
}

func badRequest(w http.ResponseWriter, code string, err error) {
	writeJSON(w, http.StatusBadRequest, problem{Error: code, Reason: err.Error()})
}

const hintPay = "open a lane of a book for this vendor (ECoupon-Open header or POST " + OpenPath + ") answering this nonce, then pay with Authorization: ECoupon lane=…, i=…, w=…, m=…"

// ServeHTTP implements caddyhttp.MiddlewareHandler. A paid request goes
// through named steps: the well-known paths, parsing the payment, reading
// and checking the body, accepting the payment (lanes.Core, opening the
// lane first when the request carries its open), answering (balance,
// credit, receipt; 402 when the payment leaves the price unpaid), then
// serving it upstream and settling (a 5xx credits the price back).
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if len(g.CORSOrigins) > 0 && g.cors(w, r) {
		return nil // a preflight, answered
	}
	if g.serveWellKnown(w, r) {
		return nil
	}
	var p coupons.Payment
	if a := r.Header[keyAuthorization]; len(a) == 1 && hasScheme(a[0], coupons.Scheme) {
		// The steady path: one Authorization field of the ECoupon scheme,
		// which speaksPayment would refuse to the Payment scheme.
		if !g.parseECoupon(w, a[0], &p) {
			return nil // answered
		}
	} else if speaksPayment(r.Header) {
		return g.servePayment(w, r, next) // the Payment scheme (paymentscheme.go)
	} else if !g.parsePayment(w, r, &p) {
		return nil // answered
	}
	// The body is bound by its SHA-256 (PROTOCOL §10): read and check it
	// before anything is opened or accepted.
	body, ok := g.readContent(w, r)
	if !ok {
		return nil
	}
	started := time.Now()
	var res lanes.Result
	doc := headerValue(r.Header, keyOpen)
	if !g.accept(w, r, &p, doc, body, g.clockAt(started), &res) {
		return nil
	}
	g.observeDelay(started)
	g.reportTheft(p.Lane, res.Theft)
	if !g.respondPaid(w, &p, &res, doc != "") {
		return nil
	}
	if g.Meter != nil {
		if g.topupByHead(w, r, p.Lane, res.Held) {
			return nil
		}
		return g.serveMetered(w, r, next, p.Lane, res.Held)
	}
	return g.serveUpstream(w, r, next, p.Lane)
}

// serveWellKnown answers the gate's own paths (lane opens, the vendor's
// receipt commitment); it reports whether it answered.
func (g *Gate) serveWellKnown(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasPrefix(r.URL.Path, wellKnownPrefix) {
		return false
	}
	switch {
	case r.URL.Path == OpenPath:
		_ = g.serveOpen(w, r)
		return true
	case r.URL.Path == coupons.TopupPath:
		g.serveTopup(w, r)
		return true
	case r.URL.Path == VendorPath && r.Method == http.MethodGet:
		if g.receipts == nil {
			writeJSON(w, http.StatusNotFound, problem{Error: coupons.CodeNoReceipts, Reason: "this gate issues no receipts (no vendor_key)"})
			return true
		}
		g.receipts.serve(w, r)
		return true
	case r.URL.Path == VendorPath:
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, problem{Error: coupons.CodeMethodNotAllowed, Reason: VendorPath + " takes GET"})
		return true
	case browserwallet.Serve(w, r, strings.TrimPrefix(r.URL.Path, wellKnownPrefix)):
		return true // the browser wallet's files
	}
	writeJSON(w, http.StatusNotFound, problem{Error: coupons.CodeNotFound,
		Reason: "the gate serves " + OpenPath + ", " + coupons.TopupPath + ", " + VendorPath + " and the browser wallet (" + wellKnownPrefix + "wallet) under " + wellKnownPrefix + "; nothing else"})
	return true
}

// parsePayment reads the request's ECoupon payment into p; without one it
// answers 402 with a challenge, with a malformed one 400.
func (g *Gate) parsePayment(w http.ResponseWriter, r *http.Request, p *coupons.Payment) bool {
	auth := headerValue(r.Header, keyAuthorization)
	if auth == "" && wantsHTML(r) {
		g.payRequiredHTML(w, r) // a browser's navigation: a page to read
		return false
	}
	if auth == "" || !hasScheme(auth, coupons.Scheme) {
		if g.Meter != nil {
			g.payRequired(w, coupons.CodePaymentRequired, g.meterHint(), hintPay)
			return false
		}
		g.payRequired(w, coupons.CodePaymentRequired, fmt.Sprintf("this resource costs %d coupon(s) of %s %s", g.Price, g.challenge.Unit, g.Currency), hintPay)
		return false
	}
	return g.parseECoupon(w, auth, p)
}

// parseECoupon parses auth, an Authorization value of the ECoupon scheme,
// into p; a malformed one is answered 400.
func (g *Gate) parseECoupon(w http.ResponseWriter, auth string, p *coupons.Payment) bool {
	if err := coupons.ParsePayment(auth, p); err != nil {
		gateMetrics.payments.WithLabelValues(g.Vendor, "bad_payment_header").Inc()
		badRequest(w, coupons.CodeBadPaymentHeader, err)
		return false
	}
	return true
}

// accept takes the payment p for r, arrived at now, on its lane
// (lanes.Core.Accept), into res; it reports whether it did. doc is the
// lane open the request carries (its ECoupon-Open), if any. A payment
// that carries a lane open is its spender's first on this lane:
// the lane is opened first, or taken over (openOnPayment); a lane the
// store does not hold, or must have opened again, is opened from the
// open the request carries. On refusal it has answered.
func (g *Gate) accept(w http.ResponseWriter, r *http.Request, p *coupons.Payment, doc string, body content, now time.Time, res *lanes.Result) bool {
	ctx := r.Context()
	pay := lanes.Payment{Coupon: *p, Request: coupons.Request{Method: r.Method, Host: strings.ToLower(r.Host),
		Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Range: rangeHeader(r.Header)}, Now: now, Hold: g.holdCoupons()}
	if body.has {
		pay.Request.ContentDigest = body.sum[:]
	}
	if doc != "" {
		var walk uint32 // what a takeover's payment may walk past max_jump
		rec, took, err := g.openOnPayment(ctx, w, r, p.Lane, doc, &walk)
		if err != nil {
			return false
		}
		if took {
			g.core.Install(p.Lane, rec)
		}
		if walk > 0 && g.longWalks.allow(clientIP(r), now) {
			// The first payment of an issuer that took a delegate's
			// portion back may use up what the delegate left of it: a
			// longer walk, after a verified open, at most twice a minute
			// per client (IPv4 address or IPv6 prefix, see ipWindow).
			pay.MaxJump = min(max(g.MaxJump, walk+g.MaxJump), maxTakeoverWalk)
		}
		// The coupons the owner takes back from its delegate's portion on
		// this store's lane are owed to it as credit; any other jump is not.
		pay.Reclaimed = walk
	}
	for opened := false; ; opened = true {
		err := g.core.AcceptTo(ctx, &pay, res)
		if err == nil {
			return true
		}
		var reopen *mustReopenError
		if (errors.Is(err, lanes.ErrNotOpen) || errors.As(err, &reopen)) && doc != "" && !opened {
			rec, err := g.openLane(ctx, w, r, []byte(doc), p.Lane, nil)
			if err != nil {
				return false // answered
			}
			if err := g.checkLane(&rec.Meta); err != nil {
				g.refuseAccept(w, p.Lane, err)
				return false
			}
			g.core.Install(p.Lane, rec)
			continue
		}
		g.refuseAccept(w, p.Lane, err)
		return false
	}
}

// refuseAccept answers a payment the core refused: 402 with the reason
// code, 429 on the lane's rate limit, 503 when the store failed.
func (g *Gate) refuseAccept(w http.ResponseWriter, id coupons.LaneID, err error) {
	var (
		reopen  *mustReopenError
		misfit  *laneMisfitError
		spent   *lanes.SpentError
		limited *lanes.RateLimitedError
		failed  *lanes.StoreError
	)
	switch {
	case errors.Is(err, lanes.ErrNotOpen):
		g.refuse(w, coupons.CodeLaneNotOpen, "lane "+id.String()+" is not open here")
	case errors.As(err, &reopen):
		g.refuse(w, coupons.CodeLaneNotOpen, "lane "+id.String()+" was opened before this store "+reopen.why+": open it again")
	case errors.As(err, &misfit):
		g.refuse(w, misfit.code, misfit.reason)
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", strconv.Itoa(int(limited.Wait/time.Second)+1))
		writeJSON(w, http.StatusTooManyRequests, problem{Error: coupons.CodeLaneRateLimited,
			Reason: fmt.Sprintf("more than %g requests per second on this lane; no coupon was spent", g.LaneRate)})
	case errors.Is(err, store.ErrRevoked):
		g.refuseRevoked(w, err)
	case errors.As(err, &failed):
		g.storeUnavailable(w, failed.Err)
	case errors.Is(err, coupons.ErrCapExceeded):
		g.refuse(w, coupons.CodeCapExceeded, "this payment would exceed the spending cap of the lane's delegation; this coupon was not accepted")
	case errors.As(err, &spent):
		gateMetrics.payments.WithLabelValues(g.Vendor, "coupon_spent").Inc()
		c := g.challenge
		c.Error, c.Reason, c.Nonce, c.Hint = coupons.CodeCouponSpent, err.Error(), g.nonces.issue(), hintPay
		c.Resume = spent.Resume
		if spent.Lease {
			c.Hint = fmt.Sprintf("the gate restarted while it held a spending lease on this lane: pay again from coupon %d (the lane's coupons below it are spent)", spent.Resume)
		}
		w.Header().Set("WWW-Authenticate", c.header())
		writeJSON(w, http.StatusPaymentRequired, c)
	default:
		g.refuse(w, reasonFor(err), err.Error())
	}
}

// reportTheft logs and queues the evidence of a stolen coupon for the
// broker (with the lane's next redemption).
func (g *Gate) reportTheft(id coupons.LaneID, theft *coupons.Theft) {
	if theft == nil {
		return
	}
	gateMetrics.thefts.WithLabelValues(g.Vendor).Inc()
	// The evidence names the request, not any secret: the chain value in
	// it is already spent.
	g.logger.Warn("stolen coupon detected: a request was paid with a coupon by someone who did not know the next chain value",
		zap.String("lane", id.String()), zap.Uint32("index", theft.Index))
	if g.vendorSigner != nil && g.Broker != "" && !g.thefts.add(id, *theft) {
		g.logger.Error("too much theft evidence waiting for redemption: this one is only logged", zap.String("lane", id.String()))
	}
}

// balanceLowRequests is how many requests at the price a lane has left
// when paid responses start to carry its balance (ECoupon-Balance) on
// every request.
const balanceLowRequests = 16

// respondPaid sets the headers of an accepted payment (the lane's balance
// and credit, a receipt); a payment short of the price (kept as credit)
// is answered with 402 insufficient_payment. It reports whether the
// request is to be served. opened is whether the payment carried a lane
// open.
//
// The balance (ECoupon-Balance) is sent when it tells the client what it
// cannot count itself: with a payment that carried a lane open (the
// lane's first at this gate, or a takeover: where the gate's state
// starts), and once the lane has balanceLowRequests requests or fewer
// left. Otherwise it is the lane's length less the index of the coupon
// just paid, which the client holds; an extra header field costs a
// response more than two SHA-256 compressions in net/http's header
// writer (PROTOCOL §14, "Charging").
func (g *Gate) respondPaid(w http.ResponseWriter, p *coupons.Payment, res *lanes.Result, opened bool) bool {
	rec := &res.Record
	h := w.Header()
	if left := rec.Meta.Length - rec.State.Last; opened || uint64(left) <= balanceLowRequests*uint64(g.Price) {
		setUint(h, keyBalance, uint64(left))
	}
	if rec.Credit > 0 {
		setUint(h, keyCredit, uint64(rec.Credit))
	}
	if !res.Served {
		gateMetrics.payments.WithLabelValues(g.Vendor, "insufficient_payment").Inc()
		g.payRequired(w, coupons.CodeInsufficientPayment, fmt.Sprintf("this resource costs %d coupon(s); %d received and kept as credit on the lane, pay %d more",
			g.Price, rec.Credit, g.Price-rec.Credit), "pay the remaining coupons on the same lane")
		return false
	}
	g.mAccepted.Inc()
	if g.receipts != nil {
		if v, err := g.receipts.header(coupons.ReceiptMessage(p.Lane, p.Index, res.Paid, &res.Digest)); err == nil {
			h[keyReceipt] = []string{v}
		} else {
			g.logger.Error("could not issue a receipt", zap.Error(err))
		}
	}
	return true
}

// serveUpstream serves a paid request and settles it: when the upstream
// fails (5xx), the price is credited back to the lane.
func (g *Gate) serveUpstream(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id coupons.LaneID) error {
	sw := newStatusWriter(w)
	err := next.ServeHTTP(sw, r)
	status := sw.status
	sw.put()
	if err != nil {
		status = http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	if status < 500 {
		g.mCoupons.Add(float64(g.Price))
		g.mRevenue.Add(g.revenue)
	} else {
		if rerr := g.core.Refund(r.Context(), id); rerr == nil {
			gateMetrics.refunds.WithLabelValues(g.Vendor).Inc()
		} else {
			g.logger.Error("could not credit a lane after an upstream failure", zap.String("lane", id.String()), zap.Error(rerr))
		}
	}
	return err
}

// content is what a paid request's body is bound by: its SHA-256, when it
// has one.
type content struct {
	sum [32]byte
	has bool
}

// readContent reads the body of a paid request (at most MaxBody bytes),
// checks it against its Content-Digest and puts it back for the next
// handler. It answers (413 body_too_large, 400 content_digest_required or
// bad_content_digest) and returns false when the request cannot be paid
// for. A request without a body costs nothing.
func (g *Gate) readContent(w http.ResponseWriter, r *http.Request) (content, bool) {
	var c content
	cd := headerValue(r.Header, keyContentDigest)
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		if cd == "" {
			return c, true
		}
		return c, g.checkContentDigest(w, cd, sha256.Sum256(nil))
	}
	if r.ContentLength > g.MaxBody {
		g.bodyTooLarge(w, r.ContentLength)
		return c, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, g.MaxBody+1))
	if err != nil {
		gateMetrics.payments.WithLabelValues(g.Vendor, "bad_content_digest").Inc()
		badRequest(w, coupons.CodeBadContentDigest, fmt.Errorf("reading the body: %w", err))
		return c, false
	}
	if int64(len(body)) > g.MaxBody {
		g.bodyTooLarge(w, -1)
		return c, false
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(body)
	if len(body) == 0 {
		if cd == "" {
			return c, true
		}
		return c, g.checkContentDigest(w, cd, sum)
	}
	if cd == "" {
		gateMetrics.payments.WithLabelValues(g.Vendor, "content_digest_required").Inc()
		badRequest(w, coupons.CodeContentDigestRequired, errors.New("a paid request with a body must state its SHA-256 in Content-Digest: sha-256=:<base64>: (RFC 9530); no coupon was accepted"))
		return c, false
	}
	c.sum, c.has = sum, true
	return c, g.checkContentDigest(w, cd, sum)
}

// checkContentDigest checks a Content-Digest value against the SHA-256 of
// the body read; it answers 400 bad_content_digest when they differ.
func (g *Gate) checkContentDigest(w http.ResponseWriter, cd string, sum [32]byte) bool {
	stated, err := coupons.ParseContentDigest(cd)
	if err == nil && stated != sum {
		err = errors.New("the Content-Digest does not match the body")
	}
	if err != nil {
		gateMetrics.payments.WithLabelValues(g.Vendor, "bad_content_digest").Inc()
		badRequest(w, coupons.CodeBadContentDigest, fmt.Errorf("%w; no coupon was accepted", err))
		return false
	}
	return true
}

func (g *Gate) bodyTooLarge(w http.ResponseWriter, n int64) {
	gateMetrics.payments.WithLabelValues(g.Vendor, "body_too_large").Inc()
	why := fmt.Sprintf("the body of a paid request is limited to %d bytes (max_body); no coupon was accepted", g.MaxBody)
	if n > 0 {
		why = fmt.Sprintf("a body of %d bytes; %s", n, why)
	}
	writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: coupons.CodeBodyTooLarge, Reason: why})
}

// rangeHeader returns the request's Range field lines joined with ", ", as
// the request digest binds them.
func rangeHeader(h http.Header) string {
	v := h[keyRange]
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ", ")
}

// refuseRevoked answers a payment that checkRevoked or the store refused:
// 402 revoked, or 503 when the store failed. No coupon was accepted.
func (g *Gate) refuseRevoked(w http.ResponseWriter, err error) {
	if !errors.Is(err, store.ErrRevoked) {
		g.storeUnavailable(w, err)
		return
	}
	gateMetrics.payments.WithLabelValues(g.Vendor, "revoked").Inc()
	g.payRequired(w, coupons.CodeRevoked, "a certificate or key of the delegation this lane was opened under has been revoked, "+
		"so the lane takes no payment under it; no coupon of this payment was accepted. The book's owner can still "+
		"open the lane again with its own key (or grant it to another device), keeping its position and credit",
		"ask the book's owner for a new grant; the owner's wallet can open this lane again and spend what is left on it")
}

// storeUnavailable logs a store failure and answers 503 with a reason code,
// like every refusal (the error itself stays in the log): the store is the
// truth, and without it no payment can be accepted safely.
func (g *Gate) storeUnavailable(w http.ResponseWriter, err error) {
	g.logger.Error("spent-state store failed", zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusServiceUnavailable, problem{Error: coupons.CodeStoreUnavailable, Reason: "the spent-state store is unavailable; try again later"})
}

// openLane verifies a lane-open document and records the lane. On failure
// it has answered the request and returns an error.
//
// When it took over a lane a delegate held a portion of (takeOver), it
// sets *walk (when walk is not nil) to the coupons the delegate left of
// its portion, which the next payment may walk through.
func (g *Gate) openLane(ctx context.Context, w http.ResponseWriter, r *http.Request, doc []byte, want coupons.LaneID, walk *uint32) (store.Record, error) {
	fail := errAnswered
	if !g.opens.allow(clientIP(r), g.clock()) {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusTooManyRequests, problem{Error: coupons.CodeOpenRateLimited, Reason: fmt.Sprintf("more than %d lane opens per minute from this address (IPv6: from its /%d)", g.OpensPerMinute, g.IPv6Prefix)})
		return store.Record{}, fail
	}
	if len(doc) > g.MaxOpenBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: coupons.CodeOpenTooLarge, Reason: fmt.Sprintf("lane-open document of %d bytes, limit %d", len(doc), g.MaxOpenBytes)})
		return store.Record{}, fail
	}
	lim := spki.DefaultLimits
	lim.MaxSize = g.MaxOpenBytes
	x, err := lim.Parse(doc)
	if err != nil {
		badRequest(w, coupons.CodeBadOpen, err)
		return store.Record{}, fail
	}
	o, err := coupons.ParseOpen(x)
	if err != nil {
		badRequest(w, coupons.CodeBadOpen, err)
		return store.Record{}, fail
	}
	pol := &coupons.OpenPolicy{Vendor: g.Vendor, Brokers: g.brokers, Now: g.clock(), CheckNonce: g.nonces.check, Cache: g.sigs, Blind: g.denoms.set}
	if g.revoked != nil {
		err := g.revoked.fresh(o.Book.Book.Broker, g.clock())
		if err != nil {
			g.revoked.refreshOnDemand(ctx)
			err = g.revoked.fresh(o.Book.Book.Broker, g.clock())
		}
		if err != nil {
			gateMetrics.opens.WithLabelValues(g.Vendor, "revocations_stale").Inc()
			w.Header().Set("Retry-After", "30")
			writeJSON(w, http.StatusServiceUnavailable, problem{Error: coupons.CodeRevocationsStale,
				Reason: "the gate has no fresh revocation list from the book's broker, so it cannot open lanes safely: " + err.Error()})
			return store.Record{}, fail
		}
		pol.Revocations = g.revoked
	}
	lane, err := coupons.VerifyOpen(o, pol)
	if err != nil {
		gateMetrics.opens.WithLabelValues(g.Vendor, reasonFor(err)).Inc()
		g.payRequired(w, reasonFor(err), err.Error(), hintPay)
		return store.Record{}, fail
	}
	if len(lane.Certs) > store.MaxCerts || len(lane.Keys) > store.MaxKeys {
		badRequest(w, coupons.CodeBadOpen, fmt.Errorf("the open goes through %d certificates and %d keys; a lane keeps at most %d and %d",
			len(lane.Certs), len(lane.Keys), store.MaxCerts, store.MaxKeys))
		return store.Record{}, fail
	}
	if want != (coupons.LaneID{}) && lane.ID != want {
		badRequest(w, coupons.CodeLaneMismatch, fmt.Errorf("the open is for lane %s, the payment for %s", lane.ID, want))
		return store.Record{}, fail
	}
	if lane.Unit != g.unit || lane.Currency != g.Currency {
		g.payRequired(w, coupons.CodeWrongUnit, fmt.Sprintf("the book's coupons are worth %s %s; this route takes coupons of %s %s",
			coupons.FormatAmount(lane.Unit), lane.Currency, g.challenge.Unit, g.Currency), hintPay)
		return store.Record{}, fail
	}
	meta := store.Meta{Tag: lane.Tag, Anchor: lane.Anchor, Length: lane.Length, Unit: lane.Unit, Currency: lane.Currency,
		NotAfter: lane.NotAfter, Spender: lane.Spender, Owner: lane.Owner, Cap: lane.Cap, Nonce: o.Nonce, Vendor: g.vendorHash,
		Certs: lane.Certs, Keys: lane.Keys, End: lane.End}
	// Caps are charged to the owner's own grant (the first delegation),
	// shared by every chain below it, with the smallest cap along the
	// chain as the limit: a delegate cannot multiply its cap by
	// sub-delegating to keys of its own, each with the same cap.
	meta.Grant = lane.Grant
	var status brokerapi.LaneStatus
	var stored *store.Record // held by the store, to be taken over
	if g.Mode != ModeOffline {
		// A lane this gate's store already holds was checked (and, online,
		// reserved) when it was first opened: the store is the truth, and
		// the broker is not asked again.
		if rec, err := g.store.Get(ctx, lane.ID); err == nil {
			if sameOpen(&rec.Meta, &meta) {
				return rec, nil
			}
			stored = &rec
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.storeUnavailable(w, err)
			return store.Record{}, fail
		}
	}
	if lane.Anonymous && g.httpClient != nil && stored == nil {
		// The broker must hold an anonymous book to pay for it: the gate
		// registers it before the lane takes a payment, in every mode.
		err = g.registerAnonymous(ctx, o)
	}
	if g.Mode != ModeOffline && stored == nil && err == nil {
		status, err = g.askBroker(ctx, lane, o.Proof)
	}
	if err != nil {
		var ref *brokerRefusal
		if errors.As(err, &ref) {
			gateMetrics.opens.WithLabelValues(g.Vendor, "broker_refused").Inc()
			g.payRequired(w, ref.Code, "the broker refused this lane: "+ref.Reason, hintPay)
			return store.Record{}, fail
		}
		gateMetrics.opens.WithLabelValues(g.Vendor, "broker_unavailable").Inc()
		g.logger.Warn("could not ask the broker about a lane open", zap.String("mode", g.Mode), zap.Error(err))
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, problem{Error: coupons.CodeBrokerUnavailable,
			Reason: "this gate validates lane opens with its broker (mode " + g.Mode + ", or the first open of an anonymous book), which could not be asked; lanes already open still work"})
		return store.Record{}, fail
	}
	if stored != nil {
		return g.takeOver(ctx, w, lane.ID, *stored, meta, bookLevel(o), walk)
	}
	first := store.NewRecord(meta)
	if status.Redeemed > 0 {
		// Opened where the broker's redemptions left the lane, in the same
		// durable write: no crash can leave it open below them.
		first.State = coupons.LaneState{Last: status.Redeemed, LastValue: status.Value}
		first.Spent = status.Redeemed
	}
	rec, err := g.store.Open(ctx, lane.ID, first, o.Proof...) // the lane and its proof: one durable write
	if err == nil && !sameOpen(&rec.Meta, &meta) {
		// Opened before, by another open: a record naming no vendor or
		// no principals (older versions), another nonce of the same
		// spender, or another authorized spender.
		return g.takeOver(ctx, w, lane.ID, rec, meta, bookLevel(o), walk)
	}
	if err == nil && status.Redeemed > rec.State.Last {
		rec, err = g.startAt(ctx, lane.ID, rec, status)
	}
	if err == nil {
		gateMetrics.opens.WithLabelValues(g.Vendor, "opened").Inc()
	}
	if err != nil {
		g.storeUnavailable(w, err)
		return store.Record{}, fail
	}
	return rec, nil
}

// maxTakeoverWalk bounds the chain steps of the first payment after a
// takeover (the owner's coupon c+1 walking through what a delegate left of
// its portion), as maxStartWalk bounds an open's walk to the broker's
// position: a verified open pays for it, what the delegate left of its
// portion bounds it, and longWalksPerMinute limits it per client.
const maxTakeoverWalk = maxStartWalk

// longWalksPerMinute is how many payments past max_jump (after a takeover)
// one client (an IPv4 address, or an IPv6 prefix of ipv6_prefix bits) may
// make per minute.
const longWalksPerMinute = 2

// errAnswered means the gate has already written its answer.
var errAnswered = errors.New("ecoupon: answered")

// openOnPayment handles a lane open that comes with a payment. An open by
// the spender the store already records for the lane (and that the lane is
// not marked revoked) is a retransmission: it changes nothing and is not
// even verified (took is false). Any other is verified and opens the lane,
// or takes it over from its spender (openLane, takeOver): the owner taking
// back a delegate's portion pays past its end, bound under its own open.
// The store, not the cache, says who holds the lane now: a cached entry may
// be older than a takeover another request made. On failure it has
// answered the request.
func (g *Gate) openOnPayment(ctx context.Context, w http.ResponseWriter, r *http.Request, id coupons.LaneID, doc string, walk *uint32) (rec store.Record, took bool, err error) {
	known, err := g.store.Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		g.storeUnavailable(w, err)
		return store.Record{}, false, errAnswered
	}
	if err == nil && !g.mustReopen(&known.Meta) && !known.Meta.Revoked && g.openBySpender(doc, &known.Meta) {
		return known, false, nil
	}
	if rec, err = g.openLane(ctx, w, r, []byte(doc), id, walk); err != nil {
		return store.Record{}, false, err
	}
	if code, reason := g.laneFits(&rec.Meta); code != "" {
		g.refuse(w, code, reason)
		return store.Record{}, false, errAnswered
	}
	return rec, true, nil
}

// openBySpender reports whether a lane-open document is by the spender a
// stored lane already has: sent again (a wallet that did not learn that
// its open arrived), it changes nothing. A document that
// does not parse is not (openLane then refuses it).
func (g *Gate) openBySpender(doc string, m *store.Meta) bool {
	lim := spki.DefaultLimits
	lim.MaxSize = g.MaxOpenBytes
	if len(doc) > g.MaxOpenBytes {
		return false
	}
	x, err := lim.Parse([]byte(doc))
	if err != nil {
		return false
	}
	o, err := coupons.ParseOpen(x)
	return err == nil && o.Spender.Hash() == m.Spender
}

// sameOpen reports whether a stored lane is held by the spender an open
// just verified here names, unmarked and complete (a vendor and
// principals): the open changes nothing, and the lane is used as stored,
// under its first nonce.
func sameOpen(stored, open *store.Meta) bool {
	return stored.Vendor == open.Vendor && stored.Spender == open.Spender && !stored.Revoked && len(stored.Certs) > 0
}

// bookLevel returns the principals every lane of an open's book shares:
// its book certificate, the owner's user certificate and the owner's key.
func bookLevel(o *coupons.Open) []([32]byte) {
	p := [][32]byte{o.Funding.Cert.Hash(), [32]byte(o.Book.Book.Owner)}
	if o.User != nil {
		p = append(p, o.User.Cert.Hash())
	}
	return p
}

// takeOver rewrites the metadata of a stored lane with that of an open
// just verified here (another spender, or a record from before version 2
// or 3), keeping the lane's position, credit and pending binding (checked
// at the next payment as before). Only the lane's owner, or a delegate
// above the lane's spender in its grant chain, may take a lane over from
// its spender: the issuer taking back a portion it granted (its next
// coupon, past the portion's end, uses up what the delegate left). A lane
// marked revoked is taken over only under principals it shares none of
// but the book's own (bookLevel): its revoked chain cannot come back under
// another end, certificate list or nonce. When the lane's spender held a
// portion, *walk is set to what it left of it.
func (g *Gate) takeOver(ctx context.Context, w http.ResponseWriter, id coupons.LaneID, rec store.Record, meta store.Meta, book [][32]byte, walk *uint32) (store.Record, error) {
	for attempt := 0; ; attempt++ {
		old := &rec.Meta
		legacy := old.Vendor == [32]byte{} || len(old.Certs) == 0
		if !legacy {
			if old.Spender != meta.Spender && !slices.Contains(old.Keys, meta.Spender) {
				gateMetrics.opens.WithLabelValues(g.Vendor, "lane_in_use").Inc()
				g.payRequired(w, coupons.CodeLaneInUse, "this lane is held by another spender; only the book's owner or a delegate above that spender in its grant chain may take it over", hintPay)
				return store.Record{}, errAnswered
			}
			if old.Revoked && sharesChain(old, &meta, book) {
				g.refuseRevoked(w, store.ErrRevoked)
				return store.Record{}, errAnswered
			}
		}
		next := rec
		next.Meta = meta
		err := g.store.Reopen(ctx, id, rec.State.Last, rec.Credit, next)
		if err == nil {
			gateMetrics.opens.WithLabelValues(g.Vendor, "taken_over").Inc()
			if walk != nil && !legacy && old.Spender != meta.Spender && old.PortionEnd() < old.Length && rec.State.Last < old.PortionEnd() {
				*walk = old.PortionEnd() - rec.State.Last + 1
			}
			return next, nil
		}
		if errors.Is(err, store.ErrRevoked) {
			g.refuseRevoked(w, err)
			return store.Record{}, errAnswered
		}
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			if rec, err = g.store.Get(ctx, id); err == nil {
				continue
			}
		}
		g.storeUnavailable(w, err)
		return store.Record{}, errAnswered
	}
}

// sharesChain reports whether a new open's principals include any of a
// stored lane's other than the book's own.
func sharesChain(old, open *store.Meta, book [][32]byte) bool {
	for _, c := range old.Certs {
		if slices.Contains(open.Certs, c) && !slices.Contains(book, c) {
			return true
		}
	}
	for _, k := range old.Keys {
		if slices.Contains(open.Keys, k) && !slices.Contains(book, [32]byte(k)) {
			return true
		}
	}
	return false
}

// serveOpen handles POST /.well-known/ecoupons/open.
func (g *Gate) serveOpen(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, problem{Error: coupons.CodeMethodNotAllowed, Reason: "POST a lane-open document here"})
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(g.MaxOpenBytes)+1))
	if err != nil || len(body) > g.MaxOpenBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: coupons.CodeOpenTooLarge, Reason: fmt.Sprintf("limit %d bytes", g.MaxOpenBytes)})
		return nil
	}
	rec, err := g.openLane(r.Context(), w, r, body, coupons.LaneID{}, nil)
	if err != nil {
		return nil
	}
	if rec.Meta.Revoked {
		// Stored marked by a gate that found its chain revoked (this
		// gate's list may be older): the lane takes no payment under it.
		g.refuseRevoked(w, store.ErrRevoked)
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"opened": true, "spent": rec.State.Last, "remaining": rec.Meta.Length - rec.State.Last, "credit": rec.Credit})
	return nil
}

func hasScheme(h, scheme string) bool {
	return len(h) > len(scheme) && strings.EqualFold(h[:len(scheme)], scheme) && h[len(scheme)] == ' '
}

func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// loadPublicKey reads a public key file: a (public-key …) S-expression in
// any form, or PEM "PUBLIC KEY" (keyfile.ParsePublic).
func loadPublicKey(path string) (*spki.PublicKey, error) { return keyfile.ReadPublic(path) }

// loadOrCreateSecret reads a 32-byte secret, creating it if absent.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < 32 {
			return nil, fmt.Errorf("%s holds %d bytes, want 32", path, len(b))
		}
		return b[:32], nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadOrCreateSecret(path) // created concurrently
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Gate)(nil)
	_ caddy.Validator             = (*Gate)(nil)
	_ caddy.CleanerUpper          = (*Gate)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gate)(nil)
)
