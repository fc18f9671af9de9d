//go:build js && wasm

package wallet

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall/js"
	"time"
)

// IndexedDB is the Storage of a browser wallet: one object store of
// files, each {data: Uint8Array, mtime: ms}, keyed by name. A write
// returns once its transaction has completed with strict durability (the
// browser flushed it to disk), so a lane state saved before a coupon
// leaves survives a crash of the tab, the browser or the machine. Locks are
// Web Locks (navigator.locks), shared by the origin's service worker and
// pages.
type IndexedDB struct {
	db js.Value
	mu sync.Mutex // in-process locks when the Web Locks API is absent
	in map[string]chan struct{}
}

// idbStore is the object store of files.
const idbStore = "files"

// OpenIndexedDB opens (creating it when absent) the IndexedDB database
// name of this origin.
func OpenIndexedDB(name string) (*IndexedDB, error) {
	idb := js.Global().Get("indexedDB")
	if idb.IsUndefined() {
		return nil, errors.New("wallet: this browser has no IndexedDB")
	}
	req := idb.Call("open", name, 1)
	upgrade := js.FuncOf(func(this js.Value, _ []js.Value) any {
		db := this.Get("result")
		if !db.Get("objectStoreNames").Call("contains", idbStore).Bool() {
			db.Call("createObjectStore", idbStore)
		}
		return nil
	})
	defer upgrade.Release()
	req.Set("onupgradeneeded", upgrade)
	db, err := idbWait(req, "onsuccess", "onerror")
	if err != nil {
		return nil, fmt.Errorf("wallet: IndexedDB %s: %w", name, err)
	}
	return &IndexedDB{db: db.Get("result"), in: map[string]chan struct{}{}}, nil
}

// idbWait waits for target's ok or fail event and returns the target.
func idbWait(target js.Value, ok, fail string) (js.Value, error) {
	done := make(chan error, 1)
	okf := js.FuncOf(func(js.Value, []js.Value) any { done <- nil; return nil })
	failf := js.FuncOf(func(js.Value, []js.Value) any {
		msg := "failed"
		if e := target.Get("error"); e.Truthy() {
			msg = e.Get("message").String()
		}
		done <- errors.New(msg)
		return nil
	})
	defer okf.Release()
	defer failf.Release()
	target.Set(ok, okf)
	target.Set(fail, failf)
	if fail == "onerror" && target.Get("onabort").IsNull() {
		target.Set("onabort", failf)
	}
	err := <-done
	return target, err
}

// tx starts a transaction on the files store.
func (d *IndexedDB) tx(write bool) (tx, st js.Value) {
	if !write {
		tx = d.db.Call("transaction", idbStore, "readonly")
	} else {
		tx = d.db.Call("transaction", idbStore, "readwrite", map[string]any{"durability": "strict"})
	}
	return tx, tx.Call("objectStore", idbStore)
}

func (d *IndexedDB) get(name string) (js.Value, error) {
	_, st := d.tx(false)
	r, err := idbWait(st.Call("get", filepath.ToSlash(name)), "onsuccess", "onerror")
	if err != nil {
		return js.Undefined(), fmt.Errorf("wallet: reading %s: %w", name, err)
	}
	v := r.Get("result")
	if v.IsUndefined() || v.IsNull() {
		return v, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return v, nil
}

// ReadFile implements Storage.
func (d *IndexedDB) ReadFile(name string) ([]byte, error) {
	v, err := d.get(name)
	if err != nil {
		return nil, err
	}
	data := v.Get("data")
	b := make([]byte, data.Get("length").Int())
	js.CopyBytesToGo(b, data)
	return b, nil
}

// put writes one file and waits for the transaction to complete.
func (d *IndexedDB) put(name string, data []byte) error {
	arr := js.Global().Get("Uint8Array").New(len(data))
	js.CopyBytesToJS(arr, data)
	v := js.Global().Get("Object").New()
	v.Set("data", arr)
	v.Set("mtime", float64(time.Now().UnixMilli()))
	tx, st := d.tx(true)
	st.Call("put", v, filepath.ToSlash(name))
	if _, err := idbWait(tx, "oncomplete", "onerror"); err != nil {
		return fmt.Errorf("wallet: writing %s: %w", name, err)
	}
	return nil
}

// WriteFile implements Storage: one put in a transaction with strict
// durability, returned from once it completed.
func (d *IndexedDB) WriteFile(name string, data []byte) error { return d.put(name, data) }

// AppendFile implements Storage (a read and a write: receipts are small).
func (d *IndexedDB) AppendFile(name string, data []byte) error {
	old, err := d.ReadFile(name)
	if err != nil && !isNotExist(err) {
		return err
	}
	return d.put(name, append(old, data...))
}

// Remove implements Storage.
func (d *IndexedDB) Remove(name string) error {
	if _, err := d.get(name); err != nil {
		return err
	}
	tx, st := d.tx(true)
	st.Call("delete", filepath.ToSlash(name))
	_, err := idbWait(tx, "oncomplete", "onerror")
	return err
}

// Glob implements Storage.
func (d *IndexedDB) Glob(pattern string) ([]string, error) {
	_, st := d.tx(false)
	r, err := idbWait(st.Call("getAllKeys"), "onsuccess", "onerror")
	if err != nil {
		return nil, err
	}
	keys := r.Get("result")
	var out []string
	for i := range keys.Get("length").Int() {
		k := keys.Index(i).String()
		if ok, _ := filepath.Match(pattern, k); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// ModTime implements Storage.
func (d *IndexedDB) ModTime(name string) (time.Time, error) {
	v, err := d.get(name)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(int64(v.Get("mtime").Float())), nil
}

// Clear deletes every file: the wallet forgets its keys, grants, lanes,
// limits and receipts.
func (d *IndexedDB) Clear() error {
	tx, st := d.tx(true)
	st.Call("clear")
	_, err := idbWait(tx, "oncomplete", "onerror")
	return err
}

// Lock implements Storage with a Web Lock named "ecoupons:"+name, held
// until the returned function runs; on timeout the error matches
// ErrLocked.
func (d *IndexedDB) Lock(name string, wait time.Duration) (func() error, error) {
	locks := js.Global().Get("navigator").Get("locks")
	if locks.IsUndefined() {
		return d.lockInProcess(name, wait)
	}
	opts := js.Global().Get("Object").New()
	if wait >= 0 {
		opts.Set("signal", js.Global().Get("AbortSignal").Call("timeout", max(1, wait.Milliseconds())))
	}
	granted := make(chan error, 1)
	var release js.Value // resolves the promise the lock is held by
	hold := js.FuncOf(func(js.Value, []js.Value) any {
		var exec js.Func
		exec = js.FuncOf(func(_ js.Value, args []js.Value) any {
			release = args[0]
			exec.Release()
			return nil
		})
		p := js.Global().Get("Promise").New(exec)
		granted <- nil
		return p
	})
	fail := js.FuncOf(func(_ js.Value, args []js.Value) any {
		granted <- fmt.Errorf("%w: %s: %s", ErrLocked, name, args[0].Get("message").String())
		return nil
	})
	locks.Call("request", "ecoupons:"+name, opts, hold).Call("catch", fail)
	err := <-granted
	hold.Release()
	if err != nil {
		fail.Release()
		return nil, err
	}
	var once sync.Once
	return func() error {
		once.Do(func() {
			release.Invoke()
			fail.Release()
		})
		return nil
	}, nil
}

// lockInProcess is Lock within this instance only.
func (d *IndexedDB) lockInProcess(name string, wait time.Duration) (func() error, error) {
	var deadline <-chan time.Time
	if wait >= 0 {
		deadline = time.After(wait)
	}
	for {
		d.mu.Lock()
		held, busy := d.in[name]
		if !busy {
			ch := make(chan struct{})
			d.in[name] = ch
			d.mu.Unlock()
			var once sync.Once
			return func() error {
				once.Do(func() {
					d.mu.Lock()
					delete(d.in, name)
					d.mu.Unlock()
					close(ch)
				})
				return nil
			}, nil
		}
		d.mu.Unlock()
		select {
		case <-held:
		case <-deadline:
			return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, name, wait)
		}
	}
}

var _ Storage = (*IndexedDB)(nil)
