package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The write-ahead log of the bolt store. Payments are made durable by
// appending them to this log with one fdatasync per group, and reach the
// bbolt file later, many at a time, at a checkpoint. The file is
// preallocated and zero-filled when created, so that an append overwrites
// data blocks in place and its fdatasync flushes data only: no file size
// or extent change, hence no journal commit (on this machine an
// overwrite+fdatasync costs about a fifth of a bbolt commit).
//
// Layout: a header block, then records.
//
//	header (walHeaderSize bytes): magic "ECWAL001", generation (8 bytes),
//	                              CRC-32C of both (4 bytes), zeros
//	record: length (4 bytes, of the payload), CRC-32C of generation ||
//	        payload (4 bytes), payload (a group of changes)
//
// A record counts only if its checksum matches under the header's
// generation, so records left from before the last checkpoint (another,
// random, generation) and a record torn by a crash are not replayed; the
// log ends at the first record that does not count. The header is
// rewritten only after a checkpoint, when everything in the log is in the
// bbolt file: a header torn by a crash is therefore read as an empty log.
const (
	walMagic      = "ECWAL001"
	walHeaderSize = 4096
)

// walSize is the size of a log (a variable so that tests can make logs
// fill up quickly).
var walSize int64 = 32 << 20

var walTable = crc32.MakeTable(crc32.Castagnoli)

// errWALFull means a record does not fit: checkpoint, then reset.
var errWALFull = errors.New("store: write-ahead log full")

type wal struct {
	buf    []byte // the record being written, reused
	f      *os.File
	fd     int // f's descriptor (os.File.Fd costs a system call)
	gen    uint64
	off    int64 // where the next record goes
	noSync bool
}

// openWAL opens the log at path, creating it if needed, and returns the
// payloads of its records to replay.
func openWAL(path string, noSync bool) (*wal, [][]byte, error) {
	w := &wal{noSync: noSync}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if f, err = createWAL(path); err != nil {
			return nil, nil, err
		}
		w.f, w.fd = f, int(f.Fd())
		return w, nil, w.reset()
	}
	if err != nil {
		return nil, nil, err
	}
	w.f, w.fd = f, int(f.Fd())
	if st, err := f.Stat(); err != nil || st.Size() != walSize {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%w: %s is %d bytes, want %d", ErrCorrupt, path, st.Size(), walSize)
		}
		return nil, nil, err
	}
	hdr := make([]byte, 20)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, nil, err
	}
	if string(hdr[:8]) != walMagic || crc32.Checksum(hdr[:16], walTable) != binary.BigEndian.Uint32(hdr[16:]) {
		// Torn while being rewritten after a checkpoint: nothing to replay.
		return w, nil, w.reset()
	}
	w.gen = binary.BigEndian.Uint64(hdr[8:16])
	var recs [][]byte
	off := int64(walHeaderSize)
	head := make([]byte, 8)
	for off+8 <= walSize {
		if _, err := f.ReadAt(head, off); err != nil {
			f.Close()
			return nil, nil, err
		}
		n := int64(binary.BigEndian.Uint32(head))
		if n == 0 || off+8+n > walSize {
			break
		}
		p := make([]byte, n)
		if _, err := f.ReadAt(p, off+8); err != nil {
			f.Close()
			return nil, nil, err
		}
		if recordCRC(w.gen, p) != binary.BigEndian.Uint32(head[4:]) {
			break
		}
		recs = append(recs, p)
		off += 8 + n
	}
	w.off = off
	return w, recs, nil
}

// createWAL writes a zero-filled log under a temporary name, syncs it and
// renames it into place, so that a log exists only at its full size.
func createWAL(path string) (*os.File, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for n := int64(0); n < walSize; n += int64(len(zero)) {
		if _, err := f.Write(zero[:min(int64(len(zero)), walSize-n)]); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		return nil, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	// Reopened under its real name, which later errors then carry.
	f.Close()
	return os.OpenFile(path, os.O_RDWR, 0)
}

func recordCRC(gen uint64, p []byte) uint32 {
	var g [8]byte
	binary.BigEndian.PutUint64(g[:], gen)
	return crc32.Update(crc32.Checksum(g[:], walTable), walTable, p)
}

// reset starts an empty log under a new random generation. The caller
// has put everything the log held into the bbolt file.
func (w *wal) reset() error {
	var g [8]byte
	if _, err := io.ReadFull(rand.Reader, g[:]); err != nil {
		return err
	}
	gen := binary.BigEndian.Uint64(g[:])
	hdr := make([]byte, 20)
	copy(hdr, walMagic)
	binary.BigEndian.PutUint64(hdr[8:], gen)
	binary.BigEndian.PutUint32(hdr[16:], crc32.Checksum(hdr[:16], walTable))
	if _, err := w.f.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return err
	}
	w.gen, w.off = gen, walHeaderSize
	return nil
}

// append writes one record and makes it durable.
func (w *wal) append(p []byte) error {
	if w.off+8+int64(len(p)) > walSize {
		return errWALFull
	}
	rec := binary.BigEndian.AppendUint32(w.buf[:0], uint32(len(p)))
	rec = binary.BigEndian.AppendUint32(rec, recordCRC(w.gen, p))
	rec = append(rec, p...)
	w.buf = rec
	if _, err := w.f.WriteAt(rec, w.off); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return err
	}
	w.off += int64(len(rec))
	return nil
}

func (w *wal) sync() error {
	if w.noSync {
		return nil
	}
	return datasync(w.f, w.fd)
}

func (w *wal) close() error { return w.f.Close() }

// A change is one put or delete of a key in a bucket. A record's payload
// is a sequence of changes:
//
//	bucket (1 byte), kind (1: put, 2: delete), key length (2 bytes),
//	value length (4 bytes), key, value
type change struct {
	k   string // the bucket's byte, then the key: the overlay's map key
	del bool
	val []byte
}

func (c *change) bucket() byte { return c.k[0] }

func (c *change) key() string { return c.k[1:] }

// fullKey appends the bucket's byte and key to buf[:0] (callers pass a
// stack buffer, so that map lookups allocate nothing).
func fullKey(buf []byte, b byte, key []byte) []byte {
	return append(append(buf[:0], b), key...)
}

func appendChange(p []byte, c change) []byte {
	kind := byte(1)
	if c.del {
		kind = 2
	}
	p = append(p, c.k[0], kind)
	p = binary.BigEndian.AppendUint16(p, uint16(len(c.k)-1))
	p = binary.BigEndian.AppendUint32(p, uint32(len(c.val)))
	p = append(p, c.k[1:]...)
	return append(p, c.val...)
}

func decodeChanges(p []byte, fn func(change) error) error {
	for len(p) > 0 {
		if len(p) < 8 {
			return fmt.Errorf("%w: truncated change in the write-ahead log", ErrCorrupt)
		}
		c := change{del: p[1] == 2}
		kl, vl := int(binary.BigEndian.Uint16(p[2:])), int(binary.BigEndian.Uint32(p[4:]))
		if p[1] != 1 && p[1] != 2 || len(p) < 8+kl+vl {
			return fmt.Errorf("%w: bad change in the write-ahead log", ErrCorrupt)
		}
		c.k = string(fullKey(nil, p[0], p[8:8+kl]))
		c.val = p[8+kl : 8+kl+vl]
		p = p[8+kl+vl:]
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}
