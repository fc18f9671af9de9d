package wallet

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
)

// errLockBusy means another process holds a file lock.
var errLockBusy = errors.New("wallet: file locked by another process")

// ErrLocked means another process uses the same wallet state.
var ErrLocked = errors.New("wallet: state is in use by another process")

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
}

// store persists a transport's lanes. save writes the whole state to a
// temporary file, fsyncs it, renames it over the state and fsyncs the
// directory, so a crash leaves either the old or the new state, whole.
type store struct {
	path string
	lock *os.File
}

// lockWait is how long openStore waits for another process to release the
// state before giving up with ErrLocked.
var lockWait = 10 * time.Second

// openStore takes an exclusive lock on path+".lock" (held until close),
// so two processes never spend from the same state; it waits up to
// lockWait for a process that holds it.
func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := tryLock(f)
		if err == nil {
			break
		}
		if !errors.Is(err, errLockBusy) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &store{path: path, lock: f}, nil
}

func (s *store) close() error {
	unlockFile(s.lock)
	return s.lock.Close()
}

// load reads the state; a missing file is an empty state.
func (s *store) load() (map[coupons.LaneID]*lane, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
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
		out[id] = &lane{id: id, cursor: c, nonce: ls.Nonce, credit: ls.Credit}
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
		st.Lanes = append(st.Lanes, laneState{Lane: l.id.String(), Cursor: base64.StdEncoding.EncodeToString(raw), Nonce: l.nonce, Credit: l.credit})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeDurably(s.path, b)
}

// SetLockWait changes how long opening a locked state waits (tests).
func SetLockWait(d time.Duration) { lockWait = d }
