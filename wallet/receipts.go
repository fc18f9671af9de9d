package wallet

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/ecoupons/ecoupons/tesla"
)

// ReceiptStatus is what checking a receipt found.
type ReceiptStatus string

// The outcomes of checking a receipt.
const (
	// ReceiptAuthenticated: the vendor's key for the receipt's interval was
	// disclosed (and chains to its signed commitment), and the MAC over the
	// payment verified: proof that the vendor acknowledged the payment.
	ReceiptAuthenticated ReceiptStatus = "authenticated"
	// ReceiptPending: the key that authenticates it has not been disclosed
	// to the wallet yet (a later response from the vendor discloses it).
	ReceiptPending ReceiptStatus = "pending"
	// ReceiptRejected: its MAC does not verify under the disclosed key: the
	// vendor (or someone on the path) sent a receipt for another payment.
	ReceiptRejected ReceiptStatus = "rejected"
	// ReceiptUnverifiable: it cannot be checked: malformed, its commitment
	// could not be obtained or is not the vendor's, or it arrived when its
	// key could already have been disclosed (TESLA's security condition).
	ReceiptUnverifiable ReceiptStatus = "unverifiable"
)

// ReceiptRecord is one receipt the wallet received, with what it needs to
// check it later.
type ReceiptRecord struct {
	At     time.Time `json:"at"`     // arrival
	Vendor string    `json:"vendor"` // the book's vendor
	URL    string    `json:"url"`    // the paid request (scheme, host, path; no query)
	Origin string    `json:"origin"` // scheme://host of the gate, for its commitment
	Header string    `json:"header"` // the TESLA receipt: ECoupon-Receipt, or Payment-Receipt's reference
	Lane   string    `json:"lane"`
	Index  uint32    `json:"i"`
	// Paid is the coupons this payment revealed; Span the coupons since the
	// lane's last answered payment (more than Paid when an earlier payment
	// was lost in flight, and the gate may count those too).
	Paid   uint32 `json:"paid"`
	Span   uint32 `json:"span"`
	Digest string `json:"digest"` // base64url request digest (§10)
}

// CheckedReceipt is a receipt with the outcome of its check.
type CheckedReceipt struct {
	ReceiptRecord
	Status ReceiptStatus `json:"status"`
	Reason string        `json:"reason,omitempty"`
}

// ReceiptLog keeps the vendor receipts a wallet receives (receipts.jsonl in
// its directory) and the vendors' signed commitments (commitments/), and
// checks them. Receipts are evidence, not money: they are appended without
// an fsync of their own.
type ReceiptLog struct {
	fs  Storage
	dir string
	// Client fetches commitments; nil means http.DefaultClient.
	Client *http.Client
	// Now stamps the arrival of receipts recorded without one; nil means
	// time.Now.
	Now func() time.Time
	// VendorKey, when set, returns the hash of the key a trusted party (the
	// broker: see BrokerVendorKey) certifies for a vendor name; a
	// commitment signed by another key is refused. Nil: the first key
	// seen for a vendor is pinned (trust on first use).
	VendorKey func(vendor string) (spki.KeyHash, error)
	mu        sync.Mutex
}

// OpenReceiptLog keeps receipts in dir.
func OpenReceiptLog(dir string) *ReceiptLog { return OpenReceiptLogIn(Files{}, dir) }

// OpenReceiptLogIn keeps receipts in dir of fs.
func OpenReceiptLogIn(fs Storage, dir string) *ReceiptLog {
	return &ReceiptLog{fs: storageOr(fs), dir: dir}
}

func (r *ReceiptLog) client() *http.Client {
	if r.Client != nil {
		return r.Client
	}
	return http.DefaultClient
}

// Record appends a receipt and, the first time its commitment is seen,
// fetches the commitment from the gate (a failure is retried by Check).
func (r *ReceiptLog) Record(rec ReceiptRecord) error {
	if rec.At.IsZero() {
		rec.At = time.Now()
		if r.Now != nil {
			rec.At = r.Now()
		}
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fs.AppendFile(filepath.Join(r.dir, "receipts.jsonl"), append(raw, '\n')); err != nil {
		return err
	}
	// The first receipt under a commitment fetches and keeps it (best
	// effort: Check retries); later ones cost no read and no verification.
	if rc, err := coupons.ParseReceipt(rec.Header); err == nil {
		if _, err := r.fs.ModTime(filepath.Join(r.dir, "commitments", rc.Commitment+".sexp")); isNotExist(err) {
			r.commitment(rec.Origin, rec.Vendor, rc.Commitment)
		}
	}
	return nil
}

// commitment returns the vendor's commitment with the given id, from disk
// or fetched from origin and kept. The commitment must be signed by the
// key it names and name the vendor; the first key seen for a vendor is
// pinned, and a commitment under another key is refused.
func (r *ReceiptLog) commitment(origin, vendor, id string) (*coupons.ReceiptCommitment, error) {
	path := filepath.Join(r.dir, "commitments", id+".sexp")
	raw, err := r.fs.ReadFile(path)
	fetched := false
	if isNotExist(err) {
		resp, ferr := r.client().Get(origin + coupons.ReceiptCommitmentPath + "?c=" + id)
		if ferr != nil {
			return nil, fmt.Errorf("fetching commitment %s: %w", id, ferr)
		}
		raw, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("fetching commitment %s: %s", id, resp.Status)
		}
		fetched = true
	}
	if err != nil {
		return nil, err
	}
	x, err := spki.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("commitment %s: %w", id, err)
	}
	c, err := coupons.ParseReceiptCommitment(x)
	if err != nil {
		return nil, fmt.Errorf("commitment %s: %w", id, err)
	}
	if c.ID() != id {
		return nil, fmt.Errorf("the gate answered commitment %s when asked for %s", c.ID(), id)
	}
	if fetched {
		// Kept as soon as it is the one asked for and self-signed: whose key
		// it is, is checked at every use, below.
		if err := r.fs.WriteFile(path, spki.Canonical(c.Sexp())); err != nil {
			return nil, err
		}
	}
	if c.Vendor != vendor {
		return nil, fmt.Errorf("commitment %s is for vendor %s, the book's is %s", id, c.Vendor, vendor)
	}
	if r.VendorKey != nil {
		want, err := r.VendorKey(vendor)
		if err != nil {
			return nil, fmt.Errorf("the key of vendor %s: %w", vendor, err)
		}
		if c.Key.Hash() != want {
			return nil, fmt.Errorf("commitment %s is signed by %s, not by the key the broker certifies for %s", id, c.Key.Hash(), vendor)
		}
	} else {
		pin := filepath.Join(r.dir, "commitments", "vendor-"+base64.RawURLEncoding.EncodeToString([]byte(vendor))+".pub")
		want := spki.Canonical(c.Key.Sexp())
		if old, err := r.fs.ReadFile(pin); err == nil {
			if string(old) != string(want) {
				return nil, fmt.Errorf("commitment %s is signed by another key than the one first seen for %s", id, vendor)
			}
		} else if err := r.fs.WriteFile(pin, want); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Records returns the receipts kept, in order of arrival.
func (r *ReceiptLog) Records() ([]ReceiptRecord, error) {
	raw, err := r.fs.ReadFile(filepath.Join(r.dir, "receipts.jsonl"))
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lines = append(lines, slices.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []ReceiptRecord
	for n, line := range lines {
		var rec ReceiptRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			if n == len(lines)-1 {
				break // a torn last line: a crash mid-append
			}
			return nil, fmt.Errorf("wallet: receipts line %d: %w", n+1, err)
		}
		out = append(out, rec)
	}
	slices.SortStableFunc(out, func(a, b ReceiptRecord) int { return a.At.Compare(b.At) })
	return out, nil
}

// maxSpan bounds the candidate counts Check tries for one receipt.
const maxSpan = 64

// Check replays every receipt, commitment by commitment in order of
// arrival, through a TESLA receiver whose clock is each receipt's arrival
// time (allowing maxSkew of clock difference with the vendor), and says
// for each whether it is authenticated, pending, rejected or unverifiable.
func (r *ReceiptLog) Check(maxSkew time.Duration) ([]CheckedReceipt, error) {
	recs, err := r.Records()
	if err != nil {
		return nil, err
	}
	out := make([]CheckedReceipt, len(recs))
	type chain struct {
		recv           *tesla.Receiver
		now            time.Time
		err            error
		origin, vendor string
		pending        bool
	}
	chains := map[string]*chain{}
	// msgs maps a candidate message to the receipts it may settle.
	msgs := map[string][]int{}
	settle := func(res tesla.Result) {
		for _, a := range res.Authenticated {
			for _, k := range msgs[string(a.Message)] {
				out[k].Status, out[k].Reason = ReceiptAuthenticated, ""
			}
		}
		for _, rj := range res.Rejected {
			for _, k := range msgs[string(rj.Message)] {
				if out[k].Status == ReceiptPending {
					out[k].Status, out[k].Reason = ReceiptRejected, "the MAC does not verify under the disclosed key"
				}
			}
		}
	}
	for k, rec := range recs {
		out[k] = CheckedReceipt{ReceiptRecord: rec, Status: ReceiptPending}
		rc, err := coupons.ParseReceipt(rec.Header)
		var lane coupons.LaneID
		var digest [32]byte
		if err == nil {
			lane, err = coupons.ParseLaneID(rec.Lane)
		}
		if err == nil {
			if b, derr := base64.RawURLEncoding.DecodeString(rec.Digest); derr != nil || len(b) != 32 {
				err = errors.New("bad digest in the log")
			} else {
				copy(digest[:], b)
			}
		}
		if err != nil {
			out[k].Status, out[k].Reason = ReceiptUnverifiable, err.Error()
			continue
		}
		ch := chains[rc.Commitment]
		if ch == nil {
			ch = &chain{origin: rec.Origin, vendor: rec.Vendor}
			chains[rc.Commitment] = ch
			c, err := r.commitment(rec.Origin, rec.Vendor, rc.Commitment)
			if err == nil {
				ch.recv, err = tesla.NewReceiver(tesla.ReceiverConfig{Commitment: c.Commitment, Schedule: c.Schedule, MaxSkew: maxSkew,
					MaxBuffered: 1 << 20, MaxSteps: c.Intervals, Now: func() time.Time { return ch.now }})
			}
			ch.err = err
		}
		if ch.err != nil {
			out[k].Status, out[k].Reason = ReceiptUnverifiable, ch.err.Error()
			continue
		}
		ch.now = rec.At
		// The gate MACs the coupons it counted: Paid, or up to Span when an
		// earlier payment on the lane was lost after reaching it.
		for paid := rec.Paid; paid <= min(max(rec.Span, rec.Paid), rec.Paid+maxSpan); paid++ {
			pkt := rc.Packet
			pkt.Message = coupons.ReceiptMessage(lane, rec.Index, paid, &digest)
			msgs[string(pkt.Message)] = append(msgs[string(pkt.Message)], k)
			res, err := ch.recv.Receive(pkt)
			settle(res)
			if err != nil && out[k].Status == ReceiptPending {
				out[k].Status, out[k].Reason = ReceiptUnverifiable, err.Error()
				break
			}
		}
	}
	// Receipts still pending: ask each gate for the key it discloses now.
	for k := range out {
		if out[k].Status == ReceiptPending {
			if rc, err := coupons.ParseReceipt(out[k].Header); err == nil {
				chains[rc.Commitment].pending = true
			}
		}
	}
	for id, ch := range chains {
		if !ch.pending || ch.recv == nil {
			continue
		}
		j, key, err := r.disclosed(ch.origin, id)
		if err != nil {
			continue // they stay pending
		}
		// A packet that only discloses a key: Receive settles the buffered
		// receipts, then refuses the packet itself, which carries nothing.
		res, _ := ch.recv.Receive(tesla.Packet{Interval: j, DisclosedIndex: j, DisclosedKey: key})
		settle(res)
	}
	return out, nil
}

// disclosed asks the gate at origin for the newest key it discloses of the
// chain id.
func (r *ReceiptLog) disclosed(origin, id string) (uint64, tesla.Key, error) {
	resp, err := r.client().Get(origin + coupons.ReceiptCommitmentPath + "?c=" + id)
	if err != nil {
		return 0, tesla.Key{}, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return parseDisclosed(resp.Header.Get(coupons.HeaderDisclosed))
}

// parseDisclosed parses an ECoupon-Disclosed value: "d=<index>, k=<key>".
func parseDisclosed(h string) (uint64, tesla.Key, error) {
	var key tesla.Key
	ds, ks, ok := strings.Cut(h, ", ")
	if !ok || !strings.HasPrefix(ds, "d=") || !strings.HasPrefix(ks, "k=") {
		return 0, key, fmt.Errorf("wallet: malformed %s %q", coupons.HeaderDisclosed, clip(h))
	}
	j, err := strconv.ParseUint(ds[2:], 10, 64)
	if err != nil || j == 0 {
		return 0, key, fmt.Errorf("wallet: malformed %s index %q", coupons.HeaderDisclosed, clip(ds))
	}
	b, err := base64.RawURLEncoding.DecodeString(ks[2:])
	if err != nil || len(b) != len(key) {
		return 0, key, fmt.Errorf("wallet: malformed %s key %q", coupons.HeaderDisclosed, clip(ks))
	}
	copy(key[:], b)
	return j, key, nil
}

// clip shortens hostile input quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// BrokerVendorKey returns a ReceiptLog.VendorKey that asks the broker at
// baseURL (GET /v1/vendor?name=…) for its certificate of a vendor's key and
// checks it: signed by brokerKey, issued by it, for that vendor name. Answers
// are cached for the life of the function.
func BrokerVendorKey(client *http.Client, baseURL string, brokerKey *spki.PublicKey) func(string) (spki.KeyHash, error) {
	if client == nil {
		client = http.DefaultClient
	}
	var mu sync.Mutex
	cache := map[string]spki.KeyHash{}
	return func(vendor string) (spki.KeyHash, error) {
		mu.Lock()
		defer mu.Unlock()
		if h, ok := cache[vendor]; ok {
			return h, nil
		}
		resp, err := client.Get(strings.TrimRight(baseURL, "/") + "/v1/vendor?name=" + url.QueryEscape(vendor))
		if err != nil {
			return spki.KeyHash{}, err
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err != nil {
			return spki.KeyHash{}, err
		}
		if resp.StatusCode != http.StatusOK {
			return spki.KeyHash{}, fmt.Errorf("the broker does not certify vendor %s: %s %s", vendor, resp.Status, clip(strings.TrimSpace(string(raw))))
		}
		x, err := spki.Parse(raw)
		if err != nil {
			return spki.KeyHash{}, fmt.Errorf("the broker's vendor certificate: %w", err)
		}
		sc, err := spki.ParseSignedCert(x)
		if err != nil {
			return spki.KeyHash{}, fmt.Errorf("the broker's vendor certificate: %w", err)
		}
		if err := sc.Verify(); err != nil || sc.Cert.Issuer.Hash != brokerKey.Hash() {
			return spki.KeyHash{}, fmt.Errorf("the vendor certificate for %s is not signed by the broker's key", vendor)
		}
		want, err := spki.ParseTag(spki.L("ecoupons-vendor", spki.L("name", vendor)))
		if err != nil {
			return spki.KeyHash{}, err
		}
		if !spki.Implies(sc.Cert.Tag, want) {
			return spki.KeyHash{}, fmt.Errorf("the broker's certificate is not for vendor %s", vendor)
		}
		cache[vendor] = sc.Cert.Subject.Hash
		return sc.Cert.Subject.Hash, nil
	}
}
