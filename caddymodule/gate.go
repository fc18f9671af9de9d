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
	"hash/maphash"
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
	"github.com/dgraph-io/ristretto/v2"
	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/store"
	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/pemutil"
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
	// RevocationsEvery is how often the lists are fetched. Default 1m.
	RevocationsEvery caddy.Duration `json:"revocations_every,omitempty"`
	// VendorKey is a PEM file with the vendor's private key (Ed25519 or
	// ECDSA P-256). When set, paid responses carry an ECoupon-Receipt
	// (TESLA, under a key chain whose commitment this key signs, served at
	// /.well-known/ecoupons/vendor). Default: no receipts.
	VendorKey string `json:"vendor_key,omitempty"`
	// ReceiptInterval is the TESLA interval of receipts. Default 1s.
	ReceiptInterval caddy.Duration `json:"receipt_interval,omitempty"`
	// ReceiptDelay is how many intervals later a receipt's key is
	// disclosed. Default 2.
	ReceiptDelay uint64 `json:"receipt_delay,omitempty"`
	// RedeemEvery is how often accepted coupons are redeemed at the broker
	// (signed with vendor_key, sent to broker). Default 1m; redemption runs
	// only when both broker and vendor_key are set.
	RedeemEvery caddy.Duration `json:"redeem_every,omitempty"`
	// SecretFile holds the key of challenge nonces (created with 32 random
	// bytes if missing). Default: ecoupons/<vendor>.secret in Caddy's data
	// directory.
	SecretFile string `json:"secret_file,omitempty"`

	brokers []*spki.PublicKey
	unit    int64
	store   store.Store
	cache   *ristretto.Cache[uint64, *laneEntry]
	sigs    *sigCache
	nonces  *nonceMaker
	locks   *[laneLocks]sync.Mutex
	// buckets are the lanes' rate-limit buckets, laneBuckets per lock
	// stripe, each guarded by its stripe's lock (see laneBucket).
	buckets *[laneLocks][laneBuckets]laneBucket
	seed    maphash.Seed
	opens   *ipWindow
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
	stopRedeem   context.CancelFunc
	stopPoll     context.CancelFunc
	logger       *zap.Logger
	now          func() time.Time
	redeemClock  func() time.Time // the redemption worker's clock (nil: time.Now)
	challenge    challenge

	// Metric children of this vendor, resolved once (hot path).
	mAccepted prometheus.Counter
	mHit      prometheus.Counter
	mMiss     prometheus.Counter
	mDelay    prometheus.Observer
}

// laneEntry is a cached lane: its record as of the last payment seen here
// (guarded by the lane's stripe lock). Its rate-limit bucket is not here
// but in g.buckets, so that the limit does not depend on the cache
// admitting the entry.
type laneEntry struct {
	key [36]byte // the lane, checked on lookup (the cache index is a hash)
	rec store.Record
	// gen is the revocation generation (revocations.generation) at which
	// rec's principals were last found unrevoked; 0: not checked yet.
	gen uint64
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
	g.now = time.Now
	g.seed = maphash.MakeSeed()
	g.vendorHash = sha256.Sum256([]byte(g.Vendor))
	g.locks = new([laneLocks]sync.Mutex)
	g.buckets = new([laneLocks][laneBuckets]laneBucket)
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
		k, err := pemutil.Read(g.VendorKey)
		if err != nil {
			return fmt.Errorf("ecoupon: vendor_key: %w", err)
		}
		var ok bool
		if signer, ok = k.(crypto.Signer); !ok {
			return fmt.Errorf("ecoupon: vendor_key %s holds no private key", g.VendorKey)
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
	}
	// Every file read so far is the user's; from here on, files are made.
	secret, err := loadOrCreateSecret(g.SecretFile)
	if err != nil {
		return fmt.Errorf("ecoupon: secret_file: %w", err)
	}
	g.nonces = &nonceMaker{secret: secret, vendor: g.Vendor, ttl: time.Duration(g.NonceTTL), now: func() time.Time { return g.now() }}
	g.opens = newIPWindow(g.OpensPerMinute, time.Minute, g.IPv6Prefix)
	g.longWalks = newIPWindow(longWalksPerMinute, time.Minute, g.IPv6Prefix)
	if signer != nil {
		g.vendorSigner = signer
		if g.receipts, err = newReceipts(signer, g.Vendor, secret, time.Duration(g.ReceiptInterval), g.ReceiptDelay, func() time.Time { return g.now() }); err != nil {
			return fmt.Errorf("ecoupon: receipts: %w", err)
		}
	}

	if g.store, err = provider.OpenStore(ctx); err != nil {
		return fmt.Errorf("ecoupon: opening store: %w", err)
	}
	if g.Mode == ModeOnline {
		// The broker pins each reserved lane to this spent state: gates
		// sharing the store share the lanes, others are refused them.
		if g.holder, err = g.store.ID(ctx); err != nil {
			return fmt.Errorf("ecoupon: the store's identity: %w", err)
		}
	}
	if g.cache, err = ristretto.NewCache(&ristretto.Config[uint64, *laneEntry]{NumCounters: 1 << 20, MaxCost: 1 << 17, BufferItems: 64}); err != nil {
		return err
	}
	if g.sigs, err = newSigCache(); err != nil {
		return err
	}
	if g.Broker != "" && g.vendorSigner != nil {
		g.httpClient = &http.Client{Timeout: 30 * time.Second}
		runCtx, stop := context.WithCancel(context.Background())
		g.stopRedeem = stop
		go g.redeemLoop(runCtx)
	} else {
		g.logger.Info("coupons are not redeemed by this gate: set both broker and vendor_key to redeem them")
	}
	g.mAccepted = gateMetrics.payments.WithLabelValues(g.Vendor, "accepted")
	g.mHit = gateMetrics.cache.WithLabelValues(g.Vendor, "hit")
	g.mMiss = gateMetrics.cache.WithLabelValues(g.Vendor, "miss")
	g.mDelay = gateMetrics.verifyDelay.WithLabelValues(g.Vendor)
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
	g.challenge = challenge{Realm: g.Vendor, Vendor: g.Vendor, Price: g.Price, Unit: coupons.FormatAmount(g.unit), Currency: g.Currency, Broker: g.Broker}
	return nil
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
	if g.SecretFile == "" && g.Vendor != "" {
		g.SecretFile = filepath.Join(g.dataDir(), g.Vendor+".secret")
	}
}

// check rejects configurations that cannot work, saying what to write. It
// needs nothing but the options (after defaults): no file is read, created
// or opened, so Provision runs it before anything else, and Validate runs
// it again.
func (g *Gate) check() error {
	switch {
	case g.Vendor == "" || strings.ToLower(g.Vendor) != g.Vendor || strings.ContainsAny(g.Vendor, " /:\\"):
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
	if g.cache != nil {
		g.cache.Close()
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
		{coupons.ErrReplay, "coupon_spent"},
		{coupons.ErrJumpTooLarge, "index_jump_too_large"},
		{coupons.ErrBeyondLane, "beyond_lane"},
		{coupons.ErrBadCoupon, "bad_coupon"},
		{coupons.ErrCapExceeded, "cap_exceeded"},
		{coupons.ErrBookNotFunded, "book_not_funded"},
		{coupons.ErrWrongVendor, "wrong_vendor"},
		{coupons.ErrBookExpired, "book_expired"},
		{coupons.ErrUntrustedBroker, "untrusted_broker"},
		{coupons.ErrOwnerNotCertified, "owner_not_certified"},
		{coupons.ErrGrantWider, "grant_wider_than_parent"},
		{coupons.ErrNotAuthorized, "not_authorized"},
		{coupons.ErrRevoked, "revoked"},
		{coupons.ErrLaneOutOfRange, "lane_out_of_range"},
		{coupons.ErrBadOpenSignature, "bad_open_signature"},
		{coupons.ErrBadNonce, "bad_nonce"},
		{coupons.ErrBadProof, "bad_merkle_proof"},
		{coupons.ErrBadBook, "bad_book"},
	} {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return "payment_refused"
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

// laneLocks is the number of locks the lanes hash to. A payment holds its
// lane's lock through the store's durable write (a group commit: up to
// commit_delay plus an fdatasync), so two busy lanes sharing a lock wait
// for each other's commits: with 256 locks, most of 256 concurrent lanes
// would share one with another lane; with 4096, about 6% (32 KiB).
const laneLocks = 4096

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.URL.Path == OpenPath {
		return g.serveOpen(w, r)
	}
	if r.URL.Path == VendorPath && r.Method == http.MethodGet {
		if g.receipts == nil {
			writeJSON(w, http.StatusNotFound, problem{Error: "no_receipts", Reason: "this gate issues no receipts (no vendor_key)"})
			return nil
		}
		g.receipts.serve(w, r)
		return nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" || !hasScheme(auth, coupons.Scheme) {
		g.payRequired(w, "payment_required", fmt.Sprintf("this resource costs %d coupon(s) of %s %s", g.Price, g.challenge.Unit, g.Currency), hintPay)
		return nil
	}
	var p coupons.Payment
	if err := coupons.ParsePayment(auth, &p); err != nil {
		gateMetrics.payments.WithLabelValues(g.Vendor, "bad_payment_header").Inc()
		badRequest(w, "bad_payment_header", err)
		return nil
	}
	// The body is bound by its SHA-256 (PROTOCOL §10): read and check it
	// before anything is opened or accepted.
	body, ok := g.readContent(w, r)
	if !ok {
		return nil // answered
	}
	started := time.Now()
	ctx := r.Context()
	key := store.Key(p.Lane)
	h := maphash.Comparable(g.seed, key)
	ent, ok := g.cache.Get(h)
	if ok && ent.key != key {
		ok = false // another lane with the same hash: a miss
	}
	// A payment that carries a lane open is its spender's first on this
	// lane: see openOnPayment (a new lane, or a takeover).
	var walk uint32 // what a takeover's payment may walk past max_jump
	opened := false
	if doc := r.Header.Get(HeaderOpen); doc != "" {
		rec, took, err := g.openOnPayment(ctx, w, r, p.Lane, doc, &walk)
		if err != nil {
			return nil // answered
		}
		if took {
			if ok {
				lock := &g.locks[h%uint64(len(g.locks))]
				lock.Lock()
				ent.reload(rec)
				lock.Unlock()
			} else {
				ent = &laneEntry{key: key, rec: rec}
				g.cache.Set(h, ent, 1)
				g.mMiss.Inc()
				opened = true
			}
		}
	}
	if opened {
		// cached above
	} else if ok {
		g.mHit.Inc()
	} else {
		g.mMiss.Inc()
		rec, err := g.store.Get(ctx, p.Lane)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.storeUnavailable(w, err)
			return nil
		}
		// A lane the store does not hold must be opened here. So must one
		// written before records named their vendor (version 1), which any
		// vendor's gate sharing the store could otherwise take: the open
		// checks its book's vendor, and names this one (see openLane).
		// And, where revocation lists are checked, one written before
		// records kept the lane's principals (version 2): the open names
		// them (see checkRevoked).
		if err != nil || g.mustReopen(&rec.Meta) {
			doc := r.Header.Get(HeaderOpen)
			if doc == "" {
				why := "lane " + p.Lane.String() + " is not open here"
				if err == nil && rec.Meta.Vendor == [32]byte{} {
					why = "lane " + p.Lane.String() + " was opened before this store named lanes' vendors: open it again"
				} else if err == nil {
					why = "lane " + p.Lane.String() + " was opened before this store kept lanes' delegation chains: open it again"
				}
				g.refuse(w, "lane_not_open", why)
				return nil
			}
			if rec, err = g.openLane(ctx, w, r, []byte(doc), p.Lane, nil); err != nil {
				return nil // answered
			}
		}
		// A store may be shared with gates of other routes or vendors: the
		// lane must have been opened for this vendor and coupon value.
		if code, reason := g.laneFits(&rec.Meta); code != "" {
			g.refuse(w, code, reason)
			return nil
		}
		ent = &laneEntry{key: key, rec: rec}
		g.cache.Set(h, ent, 1)
	}

	lock := &g.locks[h%uint64(len(g.locks))]
	lock.Lock()
	now := g.now()
	if wait := g.rateLimit(h, now); wait > 0 {
		lock.Unlock()
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		writeJSON(w, http.StatusTooManyRequests, problem{Error: "lane_rate_limited",
			Reason: fmt.Sprintf("more than %g requests per second on this lane; no coupon was spent", g.LaneRate)})
		return nil
	}
	// Revocation: a lane marked revoked in the store, or one whose
	// principals a list installed since its last check revokes, takes no
	// payment. In the steady state (no new list) this costs one atomic
	// load and two comparisons.
	if ent.rec.Meta.Revoked || (g.revoked != nil && ent.gen != g.revoked.generation()) {
		if err := g.checkRevoked(ctx, p.Lane, ent); err != nil {
			lock.Unlock()
			g.refuseRevoked(w, err)
			return nil
		}
	}
	if now.After(ent.rec.Meta.NotAfter) {
		lock.Unlock()
		g.refuse(w, "book_expired", "the lane's book or grant expired on "+spki.FormatDate(ent.rec.Meta.NotAfter))
		return nil
	}
	req := coupons.Request{Method: r.Method, Host: strings.ToLower(r.Host), Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		Range: rangeHeader(r.Header), Lane: p.Lane, Index: p.Index, Nonce: ent.rec.Meta.Nonce}
	if body.has {
		req.ContentDigest = body.sum[:]
	}
	digest := req.Digest()
	var rec store.Record
	var theft *coupons.Theft
	var paidNow uint32
	served := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 && (ent.rec.Meta.Revoked || (g.revoked != nil && ent.gen != g.revoked.generation())) {
			// Reloaded from the store: marked by another gate, or opened
			// again under another chain, which is checked before use.
			if err := g.checkRevoked(ctx, p.Lane, ent); err != nil {
				lock.Unlock()
				g.refuseRevoked(w, err)
				return nil
			}
		}
		cur := ent.rec
		st := cur.State
		maxJump := g.MaxJump
		if walk > 0 && attempt == 0 && g.longWalks.allow(clientIP(r), now) {
			// The first payment of an issuer that took a delegate's
			// portion back may use up what the delegate left of it: a
			// longer walk, after a verified open, at most twice a minute
			// per client (IPv4 address or IPv6 prefix, see ipWindow).
			maxJump = min(max(maxJump, walk+g.MaxJump), maxTakeoverWalk)
		}
		paid, th, err := coupons.VerifyPaymentUpTo(&cur.Meta.Tag, cur.Meta.Length, cur.Meta.PortionEnd(), &st, &p, &digest, maxJump)
		if err != nil && attempt == 0 && errors.Is(err, coupons.ErrReplay) {
			// Another node may have moved the lane: refresh from the store.
			if fresh, gerr := g.store.Get(ctx, p.Lane); gerr == nil && fresh.State.Last != cur.State.Last {
				ent.reload(fresh)
				continue
			}
		}
		if err != nil {
			// A refused payment uses up its token like any other: refusing
			// costs up to max_jump hashes or a store read, so bogus payments
			// must stay limited too (whoever learns a lane's ID can slow
			// that lane, not the gate).
			lock.Unlock()
			g.refuse(w, reasonFor(err), err.Error())
			return nil
		}
		total := paid + cur.Credit
		rec = cur
		rec.State, rec.Spent = st, st.Last
		served = total >= g.Price
		if served {
			rec.Credit = total - g.Price
		} else {
			rec.Credit = total
		}
		charge, _ := coupons.MulAmount(uint64(paid), cur.Meta.Unit)
		err = g.store.Advance(ctx, p.Lane, cur.State.Last, cur.Credit, rec, charge)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			fresh, gerr := g.store.Get(ctx, p.Lane)
			if gerr != nil {
				lock.Unlock()
				g.storeUnavailable(w, gerr)
				return nil
			}
			ent.reload(fresh)
			continue
		}
		if errors.Is(err, store.ErrRevoked) {
			// Another gate marked the lane after this one last read it:
			// the store refused the write, no coupon was accepted.
			ent.rec.Meta.Revoked = true
			lock.Unlock()
			g.refuseRevoked(w, err)
			return nil
		}
		if err != nil {
			lock.Unlock()
			if errors.Is(err, coupons.ErrCapExceeded) {
				g.refuse(w, "cap_exceeded", "this payment would exceed the spending cap of the lane's delegation; this coupon was not accepted")
				return nil
			}
			g.storeUnavailable(w, err)
			return nil
		}
		theft, paidNow = th, paid
		ent.rec = rec
		break
	}
	lock.Unlock()
	g.mDelay.Observe(time.Since(started).Seconds())
	if theft != nil {
		gateMetrics.thefts.WithLabelValues(g.Vendor).Inc()
		// The evidence names the request, not any secret: the chain value
		// in it is already spent.
		g.logger.Warn("stolen coupon detected: a request was paid with a coupon by someone who did not know the next chain value",
			zap.String("lane", p.Lane.String()), zap.Uint32("index", theft.Index))
		if g.vendorSigner != nil && g.Broker != "" && !g.thefts.add(p.Lane, *theft) {
			g.logger.Error("too much theft evidence waiting for redemption: this one is only logged", zap.String("lane", p.Lane.String()))
		}
	}
	remaining := rec.Meta.Length - rec.State.Last
	w.Header().Set(HeaderBalance, strconv.FormatUint(uint64(remaining), 10))
	if rec.Credit > 0 {
		w.Header().Set(HeaderCredit, strconv.FormatUint(uint64(rec.Credit), 10))
	}
	if !served {
		gateMetrics.payments.WithLabelValues(g.Vendor, "insufficient_payment").Inc()
		g.payRequired(w, "insufficient_payment", fmt.Sprintf("this resource costs %d coupon(s); %d received and kept as credit on the lane, pay %d more",
			g.Price, rec.Credit, g.Price-rec.Credit), "pay the remaining coupons on the same lane")
		return nil
	}

	g.mAccepted.Inc()
	if g.receipts != nil {
		if h, err := g.receipts.header(coupons.ReceiptMessage(p.Lane, p.Index, paidNow, &digest)); err == nil {
			w.Header().Set(HeaderReceipt, h)
		} else {
			g.logger.Error("could not issue a receipt", zap.Error(err))
		}
	}
	rr := caddyhttp.NewResponseRecorder(w, nil, nil)
	err := next.ServeHTTP(rr, r)
	status := rr.Status()
	if err != nil {
		status = http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	if status >= 500 {
		g.refund(ctx, p.Lane, ent, key)
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
	cd := r.Header.Get(coupons.HeaderContentDigest)
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
		badRequest(w, "bad_content_digest", fmt.Errorf("reading the body: %w", err))
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
		badRequest(w, "content_digest_required", errors.New("a paid request with a body must state its SHA-256 in Content-Digest: sha-256=:<base64>: (RFC 9530); no coupon was accepted"))
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
		badRequest(w, "bad_content_digest", fmt.Errorf("%w; no coupon was accepted", err))
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
	writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: "body_too_large", Reason: why})
}

// rangeHeader returns the request's Range field lines joined with ", ", as
// the request digest binds them.
func rangeHeader(h http.Header) string {
	v := h["Range"]
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ", ")
}

// laneFits checks that a stored lane was opened for this gate's vendor and
// coupon value; it returns a refusal code and reason when not.
func (g *Gate) laneFits(m *store.Meta) (string, string) {
	switch {
	case m.Vendor != g.vendorHash: // records naming no vendor were named by a new open
		return "wrong_vendor", "the lane was opened at another vendor's gate sharing this store"
	case m.Unit != g.unit || m.Currency != g.Currency:
		return "wrong_unit", fmt.Sprintf("the lane's coupons are worth %s %s; this route takes coupons of %s %s",
			coupons.FormatAmount(m.Unit), m.Currency, g.challenge.Unit, g.Currency)
	}
	return "", ""
}

// mustReopen reports whether a stored lane must be opened again here
// before it takes a payment: its record names no vendor (version 1), or
// it holds no principals (version 2) while this gate checks revocations,
// which it could not do on that lane.
func (g *Gate) mustReopen(m *store.Meta) bool {
	return m.Vendor == [32]byte{} || (g.revoked != nil && len(m.Certs) == 0)
}

// reload replaces a cached lane's record by one read from (or written to)
// the store; if its principals changed (the lane was opened again under
// another chain), they are checked again before the next payment.
func (e *laneEntry) reload(rec store.Record) {
	if !rec.Meta.SamePrincipals(e.rec.Meta.Certs, e.rec.Meta.Keys) {
		e.gen = 0
	}
	e.rec = rec
}

// checkRevoked decides whether a cached lane may take a payment, with the
// lane's lock held: it returns store.ErrRevoked when the lane is marked
// revoked in the store, or when one of its principals is on a list this
// gate installed, in which case it marks the lane in the store first (so
// that a restart of this gate and every gate sharing the store refuse it
// too, whatever lists they hold); another error when the store failed;
// nil when the lane may pay, remembering the revocation generation it was
// checked at. A lane cached as marked is read again, since a new open
// under another chain (a takeover) clears the mark.
func (g *Gate) checkRevoked(ctx context.Context, id coupons.LaneID, ent *laneEntry) error {
	for attempt := 0; attempt < 3; attempt++ {
		if ent.rec.Meta.Revoked {
			fresh, err := g.store.Get(ctx, id)
			if err != nil {
				return err
			}
			ent.reload(fresh)
			if fresh.Meta.Revoked {
				return store.ErrRevoked
			}
		}
		if g.revoked == nil {
			return nil
		}
		gen := g.revoked.generation() // before the lists are read: a later list bumps it
		if ent.gen == gen {
			return nil
		}
		if !g.revoked.revokes(&ent.rec.Meta) {
			ent.gen = gen
			return nil
		}
		err := g.store.MarkRevoked(ctx, id, ent.rec.Meta.Certs, ent.rec.Meta.Keys)
		if err == nil {
			ent.rec.Meta.Revoked = true
			gateMetrics.revokedLanes.WithLabelValues(g.Vendor).Inc()
			g.logger.Info("a lane's delegation was revoked: the lane takes no more payments under it", zap.String("lane", id.String()))
			return store.ErrRevoked
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		// The lane holds other principals now: read and check them.
		fresh, err := g.store.Get(ctx, id)
		if err != nil {
			return err
		}
		ent.reload(fresh)
		ent.gen = 0
	}
	return fmt.Errorf("ecoupon: lane %s: its principals keep changing", id)
}

// refuseRevoked answers a payment that checkRevoked or the store refused:
// 402 revoked, or 503 when the store failed. No coupon was accepted.
func (g *Gate) refuseRevoked(w http.ResponseWriter, err error) {
	if !errors.Is(err, store.ErrRevoked) {
		g.storeUnavailable(w, err)
		return
	}
	gateMetrics.payments.WithLabelValues(g.Vendor, "revoked").Inc()
	g.payRequired(w, "revoked", "a certificate or key of the delegation this lane was opened under has been revoked, "+
		"so the lane takes no payment under it; no coupon of this payment was accepted. The book's owner can still "+
		"open the lane again with its own key (or grant it to another device), keeping its position and credit",
		"ask the book's owner for a new grant; the owner's wallet can open this lane again and spend what is left on it")
}

// refund credits the price back to a lane whose paid request failed
// upstream (5xx): the coupons stay spent, the next payment uses the credit.
func (g *Gate) refund(ctx context.Context, id coupons.LaneID, ent *laneEntry, key [36]byte) {
	lock := &g.locks[maphash.Comparable(g.seed, key)%uint64(len(g.locks))]
	lock.Lock()
	defer lock.Unlock()
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := g.store.Get(ctx, id)
		if err != nil {
			break
		}
		next := cur
		next.Credit += g.Price
		if err = g.store.Advance(ctx, id, cur.State.Last, cur.Credit, next, 0); err == nil {
			ent.reload(next)
			gateMetrics.refunds.WithLabelValues(g.Vendor).Inc()
			return
		}
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	g.logger.Error("could not credit a lane after an upstream failure", zap.String("lane", id.String()))
}

// storeUnavailable logs a store failure and answers 503 with a reason code,
// like every refusal (the error itself stays in the log): the store is the
// truth, and without it no payment can be accepted safely.
func (g *Gate) storeUnavailable(w http.ResponseWriter, err error) {
	g.logger.Error("spent-state store failed", zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusServiceUnavailable, problem{Error: "store_unavailable", Reason: "the spent-state store is unavailable; try again later"})
}

// laneBuckets is the number of rate-limit buckets per lane lock stripe:
// laneLocks·laneBuckets buckets of 24 bytes, 768 KiB per gate whatever
// the number of lanes.
const laneBuckets = 8

// laneBucket is the token bucket of one lane (h, the lane's hash), held
// in its stripe's row of g.buckets under the stripe's lock. A zero last
// marks a free slot. A bucket that has filled up again (idle for
// burst/lane_rate seconds) is the same as none, so a row only needs the
// lanes of its stripe that paid within the last burst/lane_rate seconds.
type laneBucket struct {
	h      uint64
	tokens float64
	last   int64 // Unix nanoseconds of the last payment
}

// rateLimit takes a token from the bucket of the lane whose hash is h; it
// returns how long to wait when there is none. The caller holds the
// lane's stripe lock.
//
// A lane without a bucket in its stripe's row takes a free slot, or the
// slot of the bucket that is fullest now; when that one has not filled up
// again yet (more than laneBuckets lanes of one stripe paid within
// burst/lane_rate seconds), its lane starts afresh with a full bucket at
// its next payment. The lanes' hash is seeded, so a client cannot aim
// lanes at one stripe: with n lanes paying within that time, a stripe
// holds n/4096 of them on average, and an evicted bucket needs more than
// 8 in one stripe (for n = 4096, a chance of about 1e-6 per stripe).
func (g *Gate) rateLimit(h uint64, now time.Time) time.Duration {
	if g.LaneRate < 0 {
		return 0
	}
	burst := max(1, g.LaneRate)
	t := now.UnixNano()
	row := &g.buckets[h%laneLocks]
	var b *laneBucket
	fullest, most := 0, -1.0
	for i := range row {
		s := &row[i]
		if s.last != 0 && s.h == h {
			b = s
			break
		}
		level := burst // a free slot
		if s.last != 0 {
			level = s.tokens + float64(t-s.last)/1e9*g.LaneRate
		}
		if level > most {
			fullest, most = i, level
		}
	}
	if b == nil {
		b = &row[fullest]
		*b = laneBucket{h: h, tokens: burst, last: t}
	} else if t > b.last {
		b.tokens = min(burst, b.tokens+float64(t-b.last)/1e9*g.LaneRate)
		b.last = t
	}
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / g.LaneRate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// openLane verifies a lane-open document and records the lane. On failure
// it has answered the request and returns an error.
//
// When it took over a lane a delegate held a portion of (takeOver), it
// sets *walk (when walk is not nil) to the coupons the delegate left of
// its portion, which the next payment may walk through.
func (g *Gate) openLane(ctx context.Context, w http.ResponseWriter, r *http.Request, doc []byte, want coupons.LaneID, walk *uint32) (store.Record, error) {
	fail := errAnswered
	if !g.opens.allow(clientIP(r), g.now()) {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusTooManyRequests, problem{Error: "open_rate_limited", Reason: fmt.Sprintf("more than %d lane opens per minute from this address (IPv6: from its /%d)", g.OpensPerMinute, g.IPv6Prefix)})
		return store.Record{}, fail
	}
	if len(doc) > g.MaxOpenBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: "open_too_large", Reason: fmt.Sprintf("lane-open document of %d bytes, limit %d", len(doc), g.MaxOpenBytes)})
		return store.Record{}, fail
	}
	lim := spki.DefaultLimits
	lim.MaxSize = g.MaxOpenBytes
	x, err := lim.Parse(doc)
	if err != nil {
		badRequest(w, "bad_open", err)
		return store.Record{}, fail
	}
	o, err := coupons.ParseOpen(x)
	if err != nil {
		badRequest(w, "bad_open", err)
		return store.Record{}, fail
	}
	pol := &coupons.OpenPolicy{Vendor: g.Vendor, Brokers: g.brokers, Now: g.now(), CheckNonce: g.nonces.check, Cache: g.sigs}
	if g.revoked != nil {
		err := g.revoked.fresh(o.Book.Book.Broker, g.now())
		if err != nil {
			g.revoked.refreshOnDemand(ctx)
			err = g.revoked.fresh(o.Book.Book.Broker, g.now())
		}
		if err != nil {
			gateMetrics.opens.WithLabelValues(g.Vendor, "revocations_stale").Inc()
			w.Header().Set("Retry-After", "30")
			writeJSON(w, http.StatusServiceUnavailable, problem{Error: "revocations_stale",
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
		badRequest(w, "bad_open", fmt.Errorf("the open goes through %d certificates and %d keys; a lane keeps at most %d and %d",
			len(lane.Certs), len(lane.Keys), store.MaxCerts, store.MaxKeys))
		return store.Record{}, fail
	}
	if want != (coupons.LaneID{}) && lane.ID != want {
		badRequest(w, "lane_mismatch", fmt.Errorf("the open is for lane %s, the payment for %s", lane.ID, want))
		return store.Record{}, fail
	}
	if lane.Unit != g.unit || lane.Currency != g.Currency {
		g.payRequired(w, "wrong_unit", fmt.Sprintf("the book's coupons are worth %s %s; this route takes coupons of %s %s",
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
	if g.Mode != ModeOffline && stored == nil {
		if status, err = g.askBroker(ctx, lane, o.Proof); err != nil {
			var ref *brokerRefusal
			if errors.As(err, &ref) {
				gateMetrics.opens.WithLabelValues(g.Vendor, "broker_refused").Inc()
				g.payRequired(w, ref.Code, "the broker refused this lane: "+ref.Reason, hintPay)
				return store.Record{}, fail
			}
			gateMetrics.opens.WithLabelValues(g.Vendor, "broker_unavailable").Inc()
			g.logger.Warn("could not ask the broker about a lane open", zap.String("mode", g.Mode), zap.Error(err))
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, problem{Error: "broker_unavailable",
				Reason: "this gate validates lane opens with its broker (mode " + g.Mode + "), which could not be asked; lanes already open still work"})
			return store.Record{}, fail
		}
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
	rec, err := g.store.Open(ctx, lane.ID, first)
	if err == nil && !sameOpen(&rec.Meta, &meta) {
		// Opened before, by another open: a record naming no vendor or
		// no principals (older versions), another nonce of the same
		// spender, or another authorized spender.
		return g.takeOver(ctx, w, lane.ID, rec, meta, bookLevel(o), walk)
	}
	if err == nil {
		err = g.store.SetProof(ctx, lane.ID, o.Proof)
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
				g.payRequired(w, "lane_in_use", "this lane is held by another spender; only the book's owner or a delegate above that spender in its grant chain may take it over", hintPay)
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
		writeJSON(w, http.StatusMethodNotAllowed, problem{Error: "method_not_allowed", Reason: "POST a lane-open document here"})
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(g.MaxOpenBytes)+1))
	if err != nil || len(body) > g.MaxOpenBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, problem{Error: "open_too_large", Reason: fmt.Sprintf("limit %d bytes", g.MaxOpenBytes)})
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

// loadPublicKey reads a (public-key …) S-expression from a file.
func loadPublicKey(path string) (*spki.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	x, err := spki.Parse(b)
	if err != nil {
		return nil, err
	}
	return spki.ParsePublicKey(x)
}

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
