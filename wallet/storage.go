package wallet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Storage is where a wallet keeps its keys, books, grants, lane states,
// limits and receipts, named by slash- or OS-separated paths. Files (the
// CLI's directories) is the default; a browser wallet keeps them in
// IndexedDB (IndexedDB, js builds). Every write is durable when it
// returns: lane states are written before a coupon leaves.
type Storage interface {
	// ReadFile returns a file's contents; an error matching fs.ErrNotExist
	// when there is none.
	ReadFile(name string) ([]byte, error)
	// WriteFile replaces a file durably: after a crash it holds the old or
	// the new contents, whole.
	WriteFile(name string, data []byte) error
	// AppendFile appends data (receipts: evidence, not money; Files does
	// not sync it, and a torn last record after a crash is skipped by
	// readers).
	AppendFile(name string, data []byte) error
	// Remove deletes a file; an error matching fs.ErrNotExist when there
	// was none.
	Remove(name string) error
	// Glob lists the files matching a filepath.Match pattern, sorted.
	Glob(pattern string) ([]string, error)
	// ModTime is when a file was last written.
	ModTime(name string) (time.Time, error)
	// Lock takes an exclusive lock named name, against other processes
	// (Files) or other browser contexts (IndexedDB), waiting up to wait
	// (forever when negative); on timeout the error matches ErrLocked.
	// The returned function releases it.
	Lock(name string, wait time.Duration) (unlock func() error, err error)
}

// Files is the Storage of files in directories: what the CLI uses.
type Files struct{}

// ReadFile implements Storage.
func (Files) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// WriteFile implements Storage: a temporary file, fsync, rename, fsync of
// the directory (created 0700 when absent; the file is 0600).
func (Files) WriteFile(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	return writeDurably(name, data)
}

// AppendFile implements Storage.
func (Files) AppendFile(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// Remove implements Storage.
func (Files) Remove(name string) error { return os.Remove(name) }

// Glob implements Storage.
func (Files) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// ModTime implements Storage.
func (Files) ModTime(name string) (time.Time, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// Lock implements Storage with a lock file: flock (LockFileEx on Windows)
// on name, which holds the holder's PID for the message of a process that
// finds it locked (LockedError).
func (Files) Lock(name string, wait time.Duration) (func() error, error) {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if wait < 0 {
		if err := lockFile(f); err != nil {
			f.Close()
			return nil, err
		}
		return func() error { unlockFile(f); return f.Close() }, nil
	}
	deadline := time.Now().Add(wait)
	for {
		err := tryLock(f)
		if err == nil {
			break
		}
		if !errors.Is(err, errLockBusy) {
			f.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrLocked, name, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			pid, cmd := lockHolder(name)
			return nil, &LockedError{Path: name[:len(name)-len(filepath.Ext(name))], PID: pid, Command: cmd, Waited: wait}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() error { unlockFile(f); return f.Close() }, nil
}

// storageOr returns s, or Files when s is nil.
func storageOr(s Storage) Storage {
	if s == nil {
		return Files{}
	}
	return s
}

// isNotExist reports whether err says a file is absent.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
