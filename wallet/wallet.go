package wallet

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/delegation"
	"github.com/ecoupons/ecoupons/spki"
)

// ErrNoWallet means the directory holds no wallet (run init).
var ErrNoWallet = errors.New("wallet: no wallet here (run: ecoupons wallet init)")

// ErrNoBook means the wallet holds no book for a vendor.
var ErrNoBook = errors.New("wallet: no book for this vendor")

// Wallet is a user's wallet directory:
//
//	key.pem          the signing key (Ed25519, PEM, 0600)
//	enc.key          the X25519 key grants are sealed to (hex, 0600)
//	config.json      broker URL and key, account, user certificate
//	books/<id>.json  each book's commitment, master seed, salt and anchors (0600)
//	books/<id>.lanes the lane state of the paying transport
//	limits.json      spending limits and what was spent against them
//	receipts/        the vendors' receipts and receipt commitments
type Wallet struct {
	Dir string
	// Storage holds the wallet's files; nil means Files (the directory).
	Storage Storage

	Key    crypto.Signer
	Enc    *ecdh.PrivateKey
	Config Config
}

// Config is the wallet's config.json.
type Config struct {
	Broker    string `json:"broker,omitempty"`     // base URL
	BrokerKey string `json:"broker_key,omitempty"` // (public-key …), advanced form
	Account   string `json:"account,omitempty"`
	Currency  string `json:"currency,omitempty"`
	UserCert  string `json:"user_cert,omitempty"` // transport form
	KeyURI    string `json:"key_uri,omitempty"`   // pkcs11: URI of a smart-card signing key (no PIN)
}

// bookFile is books/<id>.json. It holds the master seed: a secret.
type bookFile struct {
	Book      string   `json:"book"` // signed commitment, transport form
	Master    string   `json:"master"`
	Salt      string   `json:"salt"`
	Anchors   []string `json:"anchors"`
	Delegated []uint32 `json:"delegated,omitempty"` // lanes granted to devices: the owner no longer spends them
	// Funding is the broker's book certificate (transport form), kept when
	// the broker accepted the book: lane opens carry it, and without it no
	// gate accepts the book, so the wallet never spends an unfunded book.
	Funding string `json:"funding,omitempty"`
	// Refused is the broker's refusal of the book (its code and reason),
	// when it refused: the book is kept (its secrets are the owner's) but
	// never spent.
	Refused string `json:"refused,omitempty"`
	// Ends are the ends of the portions granted of delegated lanes (lane →
	// c, L for a whole lane), for taking them back (Reclaim).
	Ends map[uint32]uint32 `json:"ends,omitempty"`
	// Created is when the book was made (absent in books made before it
	// was kept: the file's time stands in).
	Created time.Time `json:"created,omitzero"`
	// Anonymous is set for an anonymous book (anonymous.go): its own
	// owner key, its denomination, its blinding and, once funded, the
	// broker's blind funding proof.
	Anonymous *anonymousFile `json:"anonymous,omitempty"`
}

// delegations is what a wallet granted of one of its books or grants:
// books/<id>.json holds it for an owned book, grants/<h>.delegated for a
// grant.
type delegations struct {
	Delegated []uint32          `json:"delegated,omitempty"`
	Ends      map[uint32]uint32 `json:"ends,omitempty"`
}

// KeyOptions says where a wallet's signing key lives and how to unlock it.
type KeyOptions struct {
	// Passphrase encrypts key.pem (Init) and decrypts it (Load); empty
	// means the key file is not encrypted.
	Passphrase []byte
	// SmartCard is the pkcs11: URI of an existing signing key on a token
	// (module-path, token, id and/or object; the PIN through pin-source,
	// or PIN below). Init records it in config.json, without any
	// pin-value, instead of creating key.pem.
	SmartCard string
	// PIN unlocks the smart card when its URI has no pin-source.
	PIN string
}

// ErrPassphrase means key.pem is encrypted and no or a wrong passphrase
// was given.
var ErrPassphrase = errors.New("wallet: key.pem is encrypted: a passphrase is needed")

// ErrNoPIN means a smart card key could not be opened and no PIN was
// given (KeyOptions.PIN, or pin-source in its URI).
var ErrNoPIN = errors.New("wallet: the smart card needs its PIN")

// Init creates a wallet in dir with fresh keys. It refuses to overwrite.
func Init(dir string) (*Wallet, error) { return InitWith(dir, KeyOptions{}) }

// InitWith is Init with the signing key encrypted by a passphrase, or
// held by a smart card.
func InitWith(dir string, o KeyOptions) (*Wallet, error) { return InitIn(Files{}, dir, o) }

// InitIn is InitWith with the wallet kept in fs.
func InitIn(fs Storage, dir string, o KeyOptions) (*Wallet, error) {
	fs = storageOr(fs)
	for _, f := range []string{"key.pem", "config.json"} {
		if _, err := fs.ModTime(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("wallet: %s already holds a wallet", dir)
		}
	}
	var k crypto.Signer
	var cfg Config
	if o.SmartCard != "" {
		cfg.KeyURI = withoutPIN(o.SmartCard)
		var err error
		if k, err = smartCardSigner(o.SmartCard, o.PIN); err != nil {
			return nil, err
		}
	}
	if _, files := fs.(Files); files {
		if err := os.MkdirAll(filepath.Join(dir, "books"), 0o700); err != nil {
			return nil, err
		}
	}
	if k == nil {
		_, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block, err := marshalKey(ek, o.Passphrase)
		if err != nil {
			return nil, err
		}
		if err := fs.WriteFile(filepath.Join(dir, "key.pem"), block); err != nil {
			return nil, err
		}
		k = ek
	}
	enc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := fs.WriteFile(filepath.Join(dir, "enc.key"), []byte(hex.EncodeToString(enc.Bytes())+"\n")); err != nil {
		return nil, err
	}
	w := &Wallet{Dir: dir, Storage: fs, Key: k, Enc: enc, Config: cfg}
	return w, w.SaveConfig()
}

// withoutPIN drops a pin-value from a pkcs11: URI, so it can be stored.
func withoutPIN(u string) string {
	base, query, ok := strings.Cut(u, "?")
	if !ok {
		return u
	}
	var kept []string
	for _, p := range strings.Split(query, "&") {
		if !strings.HasPrefix(p, "pin-value=") && p != "" {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return base
	}
	return base + "?" + strings.Join(kept, "&")
}

// Load opens the wallet in dir (its key file unencrypted).
func Load(dir string) (*Wallet, error) { return LoadWith(dir, KeyOptions{}) }

// LoadWith opens the wallet in dir, unlocking its key with o.Passphrase
// or, on a smart card, o.PIN.
func LoadWith(dir string, o KeyOptions) (*Wallet, error) { return LoadIn(Files{}, dir, o) }

// LoadIn is LoadWith with the wallet kept in fs.
func LoadIn(fs Storage, dir string, o KeyOptions) (*Wallet, error) {
	fs = storageOr(fs)
	var cfg Config
	b, err := fs.ReadFile(filepath.Join(dir, "config.json"))
	if isNotExist(err) {
		return nil, fmt.Errorf("%w: %s", ErrNoWallet, dir)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("wallet: config.json: %w", err)
	}
	var signer crypto.Signer
	if cfg.KeyURI != "" {
		if signer, err = smartCardSigner(cfg.KeyURI, o.PIN); err != nil {
			return nil, err
		}
	} else {
		raw, err := fs.ReadFile(filepath.Join(dir, "key.pem"))
		if err != nil {
			return nil, err
		}
		signer, err = parseKey(raw, o.Passphrase)
		switch {
		case errors.Is(err, errBadPassphrase):
			return nil, fmt.Errorf("%w: the passphrase given does not decrypt %s/key.pem", ErrPassphrase, dir)
		case errors.Is(err, ErrPassphrase):
			return nil, ErrPassphrase
		case err != nil:
			return nil, fmt.Errorf("wallet: %s/key.pem: %w", dir, err)
		}
	}
	raw, err := fs.ReadFile(filepath.Join(dir, "enc.key"))
	if err != nil {
		return nil, err
	}
	eb, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("wallet: enc.key: %w", err)
	}
	enc, err := ecdh.X25519().NewPrivateKey(eb)
	if err != nil {
		return nil, fmt.Errorf("wallet: enc.key: %w", err)
	}
	return &Wallet{Dir: dir, Storage: fs, Key: signer, Enc: enc, Config: cfg}, nil
}

// SaveConfig writes config.json.
func (w *Wallet) SaveConfig() error {
	b, err := json.MarshalIndent(w.Config, "", "  ")
	if err != nil {
		return err
	}
	return w.fs().WriteFile(filepath.Join(w.Dir, "config.json"), append(b, '\n'))
}

// fs is the wallet's Storage.
func (w *Wallet) fs() Storage { return storageOr(w.Storage) }

// PublicKey is the wallet's signing key.
func (w *Wallet) PublicKey() *spki.PublicKey {
	p, _ := spki.NewPublicKey(w.Key.Public())
	return p
}

// BrokerPublicKey parses the broker key of the config.
func (w *Wallet) BrokerPublicKey() (*spki.PublicKey, error) {
	x, err := spki.Parse([]byte(w.Config.BrokerKey))
	if err != nil {
		return nil, fmt.Errorf("wallet: broker key (register first): %w", err)
	}
	return spki.ParsePublicKey(x)
}

// UserCertificate parses the user certificate of the config.
func (w *Wallet) UserCertificate() (*spki.SignedCert, error) {
	x, err := spki.Parse([]byte(w.Config.UserCert))
	if err != nil {
		return nil, fmt.Errorf("wallet: user certificate (register first): %w", err)
	}
	return spki.ParseSignedCert(x)
}

func bookName(id [32]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// SaveBook stores a book the wallet's key owns.
func (w *Wallet) SaveBook(sb *coupons.SignedBook, sec *coupons.Secrets, anchors []coupons.Value) error {
	return w.writeBookFile(sb.Book.ID(), newBookFile(sb, sec, anchors))
}

func newBookFile(sb *coupons.SignedBook, sec *coupons.Secrets, anchors []coupons.Value) *bookFile {
	f := &bookFile{Book: string(spki.Transport(sb.Sexp())), Master: hex.EncodeToString(sec.Master[:]), Salt: hex.EncodeToString(sec.Salt[:]),
		Created: time.Now().UTC().Truncate(time.Second)}
	for _, a := range anchors {
		f.Anchors = append(f.Anchors, hex.EncodeToString(a[:]))
	}
	return f
}

// writeBookFile writes books/<id>.json durably.
func (w *Wallet) writeBookFile(id [32]byte, f *bookFile) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return w.fs().WriteFile(filepath.Join(w.Dir, "books", bookName(id)+".json"), b)
}

// BookEntry is a stored book or grant, ready to spend once funded.
type BookEntry struct {
	// Holder holds the lanes; Holder.Funding is nil while the broker has
	// not accepted the book (see Funded).
	Holder    *delegation.Holder
	StatePath string   // lane state for OpenTransport
	Lanes     []uint32 // the lanes this wallet spends
	// Refused is the broker's refusal of an owned book ("" when none).
	Refused string
	// Created is when the book was made, or the grant imported.
	Created   time.Time
	file      string
	owned     bool
	anonymous bool
	fs        Storage // where the entry is kept; nil: Files
}

// Funded reports whether the entry carries the broker's book certificate
// (or, for an anonymous book, its blind funding proof), without which no
// gate opens its lanes.
func (e *BookEntry) Funded() bool { return e.Holder.Funding != nil || e.Holder.Blind != nil }

// Anonymous reports whether the book is anonymous: owned by a key of its
// own, funded by a blind signature, naming no account.
func (e *BookEntry) Anonymous() bool { return e.anonymous }

// SaveFunding stores the broker's book certificate of an owned book after
// checking it against the book and the wallet's broker key, and clears a
// refusal recorded earlier.
func (w *Wallet) SaveFunding(id [32]byte, cert *spki.SignedCert) error {
	return w.updateBook(id, func(bf *bookFile, sb *coupons.SignedBook) error {
		if err := coupons.VerifyFunding(cert, sb.Book, time.Now(), nil); err != nil {
			return err
		}
		if bk, err := w.BrokerPublicKey(); err == nil && bk.Hash() != cert.Cert.Issuer.Hash {
			return fmt.Errorf("%w: the certificate is not from this wallet's broker", coupons.ErrBookNotFunded)
		}
		bf.Funding, bf.Refused = string(spki.Transport(cert.Sexp())), ""
		return nil
	})
}

// MarkRefused records that the broker refused an owned book (code and
// reason as the broker gave them): the book is kept and never spent.
func (w *Wallet) MarkRefused(id [32]byte, reason string) error {
	return w.updateBook(id, func(bf *bookFile, _ *coupons.SignedBook) error {
		if bf.Funding != "" {
			return errors.New("wallet: the book is funded; a refusal of it now is a mistake")
		}
		bf.Refused = reason
		return nil
	})
}

// updateBook rewrites an owned book's file durably through fn.
func (w *Wallet) updateBook(id [32]byte, fn func(*bookFile, *coupons.SignedBook) error) error {
	bf, sb, err := w.readBookFile(id)
	if err != nil {
		return err
	}
	if err := fn(bf, sb); err != nil {
		return err
	}
	return w.writeBookFile(id, bf)
}

// readBookFile reads an owned book's file and its signed book.
func (w *Wallet) readBookFile(id [32]byte) (*bookFile, *coupons.SignedBook, error) {
	f := filepath.Join(w.Dir, "books", bookName(id)+".json")
	b, err := w.fs().ReadFile(f)
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: book %s…: %w", BookID(id)[:12], err)
	}
	var bf bookFile
	if err := json.Unmarshal(b, &bf); err != nil {
		return nil, nil, fmt.Errorf("wallet: %s: %w", f, err)
	}
	x, err := spki.Parse([]byte(bf.Book))
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: %s: %w", f, err)
	}
	sb, err := coupons.ParseSignedBook(x)
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: %s: %w", f, err)
	}
	return &bf, sb, nil
}

// Books returns every stored book.
func (w *Wallet) Books() ([]BookEntry, error) {
	files, err := w.fs().Glob(filepath.Join(w.Dir, "books", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []BookEntry
	var user *spki.SignedCert
	if len(files) > 0 && w.Config.UserCert != "" {
		if user, err = w.UserCertificate(); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		b, err := w.fs().ReadFile(f)
		if err != nil {
			return nil, err
		}
		var bf bookFile
		if err := json.Unmarshal(b, &bf); err != nil {
			return nil, fmt.Errorf("wallet: %s: %w", f, err)
		}
		x, err := spki.Parse([]byte(bf.Book))
		if err != nil {
			return nil, fmt.Errorf("wallet: %s: %w", f, err)
		}
		sb, err := coupons.ParseSignedBook(x)
		if err != nil {
			return nil, fmt.Errorf("wallet: %s: %w", f, err)
		}
		sec := &coupons.Secrets{}
		if _, err := hex.Decode(sec.Master[:], []byte(bf.Master)); err != nil {
			return nil, fmt.Errorf("wallet: %s: master: %w", f, err)
		}
		if _, err := hex.Decode(sec.Salt[:], []byte(bf.Salt)); err != nil {
			return nil, fmt.Errorf("wallet: %s: salt: %w", f, err)
		}
		anchors := make([]coupons.Value, len(bf.Anchors))
		for i, a := range bf.Anchors {
			if _, err := hex.Decode(anchors[i][:], []byte(a)); err != nil {
				return nil, fmt.Errorf("wallet: %s: anchor %d: %w", f, i, err)
			}
		}
		if coupons.MerkleRoot(anchors) != sb.Book.Root {
			return nil, fmt.Errorf("wallet: %s: the anchors do not match the book's root", f)
		}
		signer, bookUser := w.Key, user
		if bf.Anonymous != nil {
			// Its own key, and no identity.
			if signer, err = bf.Anonymous.key(); err != nil {
				return nil, fmt.Errorf("wallet: %s: %w", f, err)
			}
			bookUser = nil
		}
		h, err := delegation.NewOwner(sb, bookUser, sec, anchors, signer)
		if err != nil {
			return nil, err
		}
		if bf.Anonymous != nil && bf.Anonymous.Proof != "" {
			x, err := spki.Parse([]byte(bf.Anonymous.Proof))
			if err != nil {
				return nil, fmt.Errorf("wallet: %s: blind funding proof: %w", f, err)
			}
			if h.Blind, _ = x.(spki.List); h.Blind == nil || !h.Blind.Is(coupons.BlindFundingHead) {
				return nil, fmt.Errorf("wallet: %s: the blind funding proof is not (%s …)", f, coupons.BlindFundingHead)
			}
		}
		if bf.Funding != "" {
			fx, err := spki.Parse([]byte(bf.Funding))
			if err == nil {
				h.Funding, err = spki.ParseSignedCert(fx)
			}
			if err != nil {
				return nil, fmt.Errorf("wallet: %s: book certificate: %w", f, err)
			}
		}
		delegated := map[uint32]bool{}
		for _, l := range bf.Delegated {
			delegated[l] = true
		}
		var lanes []uint32
		for l := uint32(0); l < sb.Book.Lanes; l++ {
			if !delegated[l] {
				lanes = append(lanes, l)
			}
		}
		created := bf.Created
		if created.IsZero() {
			created = fileTime(w.fs(), f)
		}
		out = append(out, BookEntry{Holder: h, StatePath: strings.TrimSuffix(f, ".json") + ".lanes", Lanes: lanes, Refused: bf.Refused,
			Created: created, file: f, owned: true, anonymous: bf.Anonymous != nil, fs: w.Storage})
	}
	grants, err := w.grants()
	if err != nil {
		return nil, err
	}
	return append(out, grants...), nil
}

// MarkDelegated records that lanes lo…hi of an owned book were granted
// away whole, after checking that this wallet never spent from them. A
// grant's own lanes and portion ends are recorded by MarkGranted.
func (w *Wallet) MarkDelegated(e *BookEntry, lo, hi uint32) error {
	if !e.owned {
		return errors.New("wallet: only the book's owner records delegations here")
	}
	ends := map[uint32]uint32{}
	for l := lo; l <= hi; l++ {
		ends[l] = e.Holder.Book.Book.Length
	}
	return w.markDelegated(e, ends)
}

// MarkGranted records that the lanes of grant g, issued from entry e (an
// owned book or a grant with propagate), were granted away up to their
// portions' ends, after checking that this wallet never spent from them:
// the wallet no longer spends them, until Reclaim takes them back.
func (w *Wallet) MarkGranted(e *BookEntry, g *delegation.Grant) error {
	ends := map[uint32]uint32{}
	for _, sl := range g.Lanes {
		ends[sl.Lane] = sl.End
		if sl.End == 0 {
			ends[sl.Lane] = e.Holder.Book.Book.Length
		}
	}
	return w.markDelegated(e, ends)
}

func (w *Wallet) markDelegated(e *BookEntry, ends map[uint32]uint32) error {
	if st, err := w.fs().ReadFile(e.StatePath); err == nil || !isNotExist(err) {
		// A state that cannot be read counts as having spent everything.
		var sf stateFile
		if err == nil {
			err = json.Unmarshal(st, &sf)
		}
		if err != nil {
			return fmt.Errorf("wallet: the lane state %s cannot be read, so the lanes to grant may have been spent from: %v", e.StatePath, err)
		}
		for _, ls := range sf.Lanes {
			id, err := coupons.ParseLaneID(ls.Lane)
			if err != nil {
				return fmt.Errorf("wallet: the lane state %s names a lane %q: %v", e.StatePath, ls.Lane, err)
			}
			if _, ok := ends[id.Lane]; !ok {
				continue
			}
			// A lane is used once a coupon of it was revealed, opened or
			// not (an open can be cleared for a retry); so is a lane taken
			// back (its cursor stands past the portion it granted).
			used := ls.Nonce != ""
			var c coupons.Cursor
			if raw, err := base64.StdEncoding.DecodeString(ls.Cursor); err != nil || c.UnmarshalBinary(raw) != nil || c.Position() > 0 {
				used = true
			}
			if used {
				return fmt.Errorf("wallet: lane %d was already spent from by this wallet; delegate unused lanes", id.Lane)
			}
		}
	}
	d, err := w.readDelegations(e)
	if err != nil {
		return err
	}
	for l := range ends {
		if slices.Contains(d.Delegated, l) {
			return fmt.Errorf("wallet: lane %d is already delegated", l)
		}
	}
	if d.Ends == nil {
		d.Ends = map[uint32]uint32{}
	}
	for _, l := range slices.Sorted(maps.Keys(ends)) {
		d.Delegated = append(d.Delegated, l)
		d.Ends[l] = ends[l]
	}
	return w.writeDelegations(e, d)
}

// readDelegations reads what e's wallet granted of it.
func (w *Wallet) readDelegations(e *BookEntry) (delegations, error) {
	var d delegations
	if e.owned {
		b, err := w.fs().ReadFile(e.file)
		if err != nil {
			return d, err
		}
		var bf bookFile
		if err := json.Unmarshal(b, &bf); err != nil {
			return d, fmt.Errorf("wallet: %s: %w", e.file, err)
		}
		return delegations{Delegated: bf.Delegated, Ends: bf.Ends}, nil
	}
	b, err := w.fs().ReadFile(strings.TrimSuffix(e.file, ".grant") + ".delegated")
	if isNotExist(err) {
		return d, nil
	}
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("wallet: %s: %w", e.file, err)
	}
	return d, nil
}

// writeDelegations durably records what e's wallet granted of it.
func (w *Wallet) writeDelegations(e *BookEntry, d delegations) error {
	if e.owned {
		b, err := w.fs().ReadFile(e.file)
		if err != nil {
			return err
		}
		var bf bookFile
		if err := json.Unmarshal(b, &bf); err != nil {
			return err
		}
		bf.Delegated, bf.Ends = d.Delegated, d.Ends
		nb, err := json.Marshal(bf)
		if err != nil {
			return err
		}
		return w.fs().WriteFile(e.file, nb)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return w.fs().WriteFile(strings.TrimSuffix(e.file, ".grant")+".delegated", b)
}

// ErrNotReclaimable means a lane cannot be taken back: it was not granted
// away by this wallet, or was granted whole (nothing lies past its end:
// revoke the grant instead).
var ErrNotReclaimable = errors.New("wallet: lane cannot be reclaimed")

// Reclaim takes back lanes this wallet granted as portions (MarkGranted):
// each becomes the wallet's again with its cursor at the portion's end c,
// so the wallet's next payment on it is coupon c+1, sent with a fresh lane
// open. At the vendor that coupon walks through the delegate's unspent
// coupons (those above its last payment, up to c) and pays for them too:
// the wallet loses nothing, and the delegate can spend no more there. It
// returns the ends the lanes restart from.
func (w *Wallet) Reclaim(e *BookEntry, lanes []uint32) (map[uint32]uint32, error) {
	d, err := w.readDelegations(e)
	if err != nil {
		return nil, err
	}
	b := e.Holder.Book.Book
	out := map[uint32]uint32{}
	for _, l := range lanes {
		c, ok := d.Ends[l]
		hend, _, held := e.Holder.Portion(l)
		switch {
		case !slices.Contains(d.Delegated, l) || !ok || !held:
			return nil, fmt.Errorf("%w: lane %d was not granted as a portion by this wallet", ErrNotReclaimable, l)
		case c >= hend:
			return nil, fmt.Errorf("%w: lane %d was granted whole (up to coupon %d): revoke the grant instead", ErrNotReclaimable, l, c)
		}
		out[l] = c
	}
	st, err := openStore(w.fs(), e.StatePath)
	if err != nil {
		return nil, err
	}
	defer st.close()
	saved, err := st.load()
	if err != nil {
		return nil, err
	}
	for l, c := range out {
		id := coupons.LaneID{Book: b.ID(), Lane: l}
		hend, hval, _ := e.Holder.Portion(l)
		if old, ok := saved[id]; ok && old.cursor.End() == hend && old.cursor.Position() >= c {
			continue // never move a cursor back
		}
		cur, err := coupons.NewCursorAt(b.LaneTag(l), b.Length, hend, hval, c)
		if err != nil {
			return nil, err
		}
		// No nonce: the first payment opens the lane anew (under this
		// wallet's key, where the vendor knows it under the delegate's).
		saved[id] = &lane{id: id, cursor: cur}
	}
	all := make([]*lane, 0, len(saved))
	for _, id := range slices.SortedFunc(maps.Keys(saved), func(x, y coupons.LaneID) int { return strings.Compare(x.String(), y.String()) }) {
		all = append(all, saved[id])
	}
	if err := st.save(all); err != nil {
		return nil, err
	}
	// The state is written first: a crash before the record below leaves
	// the lanes delegated, and reclaiming again writes the same state.
	var kept []uint32
	for _, l := range d.Delegated {
		if _, ok := out[l]; !ok {
			kept = append(kept, l)
		}
	}
	d.Delegated = kept
	for l := range out {
		delete(d.Ends, l)
	}
	return out, w.writeDelegations(e, d)
}

// Device returns this wallet's signed device identity, for a book owner
// to delegate lanes to.
func (w *Wallet) Device(name string) (*delegation.Device, error) {
	return delegation.NewDevice(name, w.Key, w.Enc.PublicKey())
}

// ImportGrant verifies a grant addressed to this wallet and stores it.
func (w *Wallet) ImportGrant(doc []byte, now time.Time) (*delegation.Grant, error) {
	x, err := spki.Parse(doc)
	if err != nil {
		return nil, err
	}
	g, err := delegation.ParseGrant(x)
	if err != nil {
		return nil, err
	}
	if _, err := delegation.Accept(g, w.Key, w.Enc, now); err != nil {
		return nil, err
	}
	h := g.Cert().Cert.Hash()
	return g, w.fs().WriteFile(filepath.Join(w.Dir, "grants", hex.EncodeToString(h[:8])+".grant"), spki.Transport(g.Sexp()))
}

// grants loads the imported grants that can be spent from.
func (w *Wallet) grants() ([]BookEntry, error) {
	out, _, err := w.loadGrants()
	return out, err
}

// loadGrants loads the imported grants: those that verify now, and what
// is wrong with the others.
func (w *Wallet) loadGrants() (out []BookEntry, problems []string, err error) {
	files, err := w.fs().Glob(filepath.Join(w.Dir, "grants", "*.grant"))
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		b, err := w.fs().ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		x, err := spki.Parse(b)
		if err != nil {
			return nil, nil, fmt.Errorf("wallet: %s: %w", f, err)
		}
		g, err := delegation.ParseGrant(x)
		if err != nil {
			return nil, nil, fmt.Errorf("wallet: %s: %w", f, err)
		}
		h, err := delegation.Accept(g, w.Key, w.Enc, time.Now())
		if err != nil {
			// An expired or revoked-at-import grant, or one from before
			// book certificates, cannot be spent; it must not stop the
			// wallet's other books (GrantProblems names it).
			problems = append(problems, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		e := BookEntry{Holder: h, StatePath: strings.TrimSuffix(f, ".grant") + ".lanes", Created: fileTime(w.fs(), f), file: f, anonymous: h.Blind != nil, fs: w.Storage}
		d, err := w.readDelegations(&e)
		if err != nil {
			return nil, nil, err
		}
		for _, l := range h.Lanes() {
			if !slices.Contains(d.Delegated, l) {
				e.Lanes = append(e.Lanes, l)
			}
		}
		slices.Sort(e.Lanes)
		out = append(out, e)
	}
	return out, problems, nil
}

// GrantProblems lists the imported grants this wallet cannot spend from,
// with the reason (expired, the book not funded, not for this device…):
// Books leaves them out.
func (w *Wallet) GrantProblems() ([]string, error) {
	_, problems, err := w.loadGrants()
	return problems, err
}

// Budget returns the wallet's spending limits (limits.json), shared by
// every transport and process that pays from the wallet.
func (w *Wallet) Budget() (*Budget, error) {
	return OpenBudgetIn(w.fs(), filepath.Join(w.Dir, "limits.json"))
}

// Receipts returns the wallet's receipt log (receipts/). Once the wallet
// is registered, vendors' receipt keys are checked against the broker's
// vendor certificates; before, the first key seen is pinned.
func (w *Wallet) Receipts() *ReceiptLog {
	r := OpenReceiptLogIn(w.fs(), filepath.Join(w.Dir, "receipts"))
	if bk, err := w.BrokerPublicKey(); err == nil && w.Config.Broker != "" {
		r.VendorKey = BrokerVendorKey(nil, w.Config.Broker, bk)
	}
	return r
}
