package wallet

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// errLockBusy means another process holds a file lock.
var errLockBusy = errors.New("wallet: file locked by another process")

// ErrLocked means another process uses the same wallet state. The error
// that wraps it names the process (LockedError).
var ErrLocked = errors.New("wallet: state is in use by another process")

// LockedError is the ErrLocked of one state file: the process holding its
// lock (PID 0 when it cannot be told) and what to do.
type LockedError struct {
	Path    string
	PID     int
	Command string // the holder's command line, when it can be read
	Waited  time.Duration
}

// Error names the holder and what to do.
func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = fmt.Sprintf("process %d", e.PID)
		if e.Command != "" {
			who += " (" + e.Command + ")"
		}
	}
	return fmt.Sprintf("wallet: the lanes of %s are in use by %s, which holds %s.lock (waited %v): "+
		"stop it, or pay through it if it is a wallet proxy, or set $ECOUPONS_LOCK_WAIT (e.g. 2m) to wait longer",
		filepath.Base(e.Path), who, e.Path, e.Waited)
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Unwrap() error { return ErrLocked }

// cmdline writes a /proc/PID/cmdline for a message: arguments joined by
// spaces, a PIN in a pkcs11: URI hidden (never show it), at most 120
// bytes.
func cmdline(raw []byte) string {
	line := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
	line = hidePIN(line)
	if len(line) > 120 {
		line = strings.ToValidUTF8(line[:120], "") + "…"
	}
	return line
}

// hidePIN replaces the value of every pin-value= in s (up to ;, &, ? or
// a space) with an ellipsis.
func hidePIN(s string) string {
	const key = "pin-value="
	var b strings.Builder
	for {
		i := strings.Index(s, key)
		if i < 0 {
			return b.String() + s
		}
		b.WriteString(s[:i+len(key)] + "…")
		s = s[i+len(key):]
		if j := strings.IndexAny(s, ";&? \t\n"); j >= 0 {
			s = s[j:]
		} else {
			s = ""
		}
	}
}

// stateFile is the on-disk state of a transport's lanes: each lane's
// cursor (MarshalBinary), the nonce it was opened with and its credit. It
// holds unspent chain values: the file is created 0600.
type stateFile struct {
	Version int         `json:"version"`
	Lanes   []laneState `json:"lanes"`
}

type laneState struct {
	Lane   string `json:"lane"`
	Cursor string `json:"cursor"` // base64 of coupons.Cursor.MarshalBinary
	Nonce  string `json:"nonce,omitempty"`
	Credit uint32 `json:"credit,omitempty"`
	// CreditUnknown: a metered response on the lane was cut off before
	// the gate said the lane's credit; the next payment learns it.
	CreditUnknown bool `json:"credit_unknown,omitempty"`
	// Retired: a gate refused the lane for good (cap_exceeded, revoked):
	// no coupon of it is revealed any more.
	Retired bool `json:"retired,omitempty"`
	// Store: the store the lane pays (a challenge's store parameter).
	Store string `json:"store,omitempty"`
}

// store persists a transport's lanes. save writes the whole state
// durably (Storage.WriteFile), so a crash leaves either the old or the new
// state, whole.
type store struct {
	fs     Storage
	path   string
	unlock func() error
}

// lockWait is how long openStore waits for another process to release the
// state before giving up with ErrLocked.
var lockWait = 10 * time.Second

// openStore takes an exclusive lock on path+".lock" (held until close),
// so two processes never spend from the same state; it waits up to
// lockWait for a process that holds it.
func openStore(fs Storage, path string) (*store, error) {
	fs = storageOr(fs)
	unlock, err := fs.Lock(path+".lock", lockWait)
	if err != nil {
		return nil, err
	}
	return &store{fs: fs, path: path, unlock: unlock}, nil
}

func (s *store) close() error { return s.unlock() }

// load reads the state; a missing file is an empty state.
func (s *store) load() (map[coupons.LaneID]*lane, error) { return loadState(s.fs, s.path) }

// loadState reads the lane state at path without locking it (a missing
// file is an empty state): for showing it, or under the store's lock.
func loadState(fs Storage, path string) (map[coupons.LaneID]*lane, error) {
	s := struct{ path string }{path}
	b, err := storageOr(fs).ReadFile(s.path)
	if isNotExist(err) {
		return map[coupons.LaneID]*lane{}, nil
	}
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
		return nil, fmt.Errorf("wallet: state %s is corrupt or of another version: %v", s.path, err)
	}
	out := map[coupons.LaneID]*lane{}
	for _, ls := range st.Lanes {
		id, err := coupons.ParseLaneID(ls.Lane)
		if err != nil {
			return nil, fmt.Errorf("wallet: state %s: %w", s.path, err)
		}
		raw, err := base64.StdEncoding.DecodeString(ls.Cursor)
		if err != nil {
			return nil, fmt.Errorf("wallet: state %s: cursor of %s: %w", s.path, ls.Lane, err)
		}
		c := new(coupons.Cursor)
		if err := c.UnmarshalBinary(raw); err != nil {
			return nil, fmt.Errorf("wallet: state %s: cursor of %s: %w", s.path, ls.Lane, err)
		}
		out[id] = &lane{id: id, cursor: c, nonce: ls.Nonce, credit: ls.Credit, creditUnknown: ls.CreditUnknown, retired: ls.Retired, store: ls.Store}
	}
	return out, nil
}

// save writes every lane's state durably.
func (s *store) save(lanes []*lane) error {
	st := stateFile{Version: 1}
	for _, l := range lanes {
		raw, err := l.cursor.MarshalBinary()
		if err != nil {
			return err
		}
		st.Lanes = append(st.Lanes, laneState{Lane: l.id.String(), Cursor: base64.StdEncoding.EncodeToString(raw), Nonce: l.nonce, Credit: l.credit, CreditUnknown: l.creditUnknown, Retired: l.retired, Store: l.store})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.fs.WriteFile(s.path, b)
}

// SetLockWait changes how long opening a locked state waits (tests).
func SetLockWait(d time.Duration) { lockWait = d }
