package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io/fs"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// Stored data fails loudly. Before bbolt maps registry.db, checkFile reads
// the two meta pages that head every bbolt file and refuses a file whose
// headers are both invalid or that is shorter than its last commit needs
// (bbolt would map the missing pages and die of SIGBUS reading them). Then
// bbolt opens it, every bucket, key and value is read, and bbolt's own
// consistency check runs, all under guard, which turns bbolt's panics and
// memory faults into errors. Whatever fails, Open answers ErrDamaged, names
// the file and says what to do; it never starts an empty registry in its
// place. A file that does not exist is a fresh start; an empty one is too,
// unless Options.Evidence shows the data directory was used before.

// ErrDamaged is wrapped by the error Open returns when registry.db cannot
// be trusted.
var ErrDamaged = errors.New("registry database damaged")

// Layout of a bbolt meta page (go.etcd.io/bbolt, file format version 2): a
// 16-byte page header, then magic, version, page size and flags (4 bytes
// each), the root bucket (16), the freelist page, the high-water mark, the
// transaction id and an FNV-64a checksum of everything before it (8 each),
// in the machine's byte order.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	metaOffset      = 16
	metaSummed      = 56
	metaSize        = metaSummed + 8
	defaultPageSize = 4096
)

// boltMeta is what checkFile needs of a meta page.
type boltMeta struct {
	pageSize uint32
	pages    uint64 // high-water mark: pages the last commit spans
	txid     uint64
}

// readMeta reads the meta page at off; ok is false unless its magic,
// version and checksum are right.
func readMeta(f *os.File, off int64) (m boltMeta, ok bool) {
	var b [metaOffset + metaSize]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	p := b[metaOffset:]
	h := fnv.New64a()
	_, _ = h.Write(p[:metaSummed])
	e := binary.NativeEndian
	if e.Uint32(p[0:]) != boltMagic || e.Uint32(p[4:]) != boltVersion || e.Uint64(p[metaSummed:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: e.Uint32(p[8:]), pages: e.Uint64(p[40:]), txid: e.Uint64(p[48:])}, true
}

// newestMeta returns the valid meta page with the highest transaction id,
// which is the one bbolt would use.
func newestMeta(f *os.File) (boltMeta, error) {
	m0, ok0 := readMeta(f, 0)
	size := int64(defaultPageSize)
	if ok0 {
		size = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, size)
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		return m1, nil
	case ok0:
		return m0, nil
	}
	return boltMeta{}, errors.New("has no valid header (neither of its two meta pages passes bbolt's checks): it is not a registry database, or its first pages are damaged")
}

// checkFile refuses a registry.db that bbolt cannot open safely: see the
// comment at the top of this file. evidence are files whose presence shows
// that the data directory was used before.
func checkFile(path string, evidence []string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a fresh start
	}
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("embedded: stat %s: %w", path, err)
	}
	if info.Size() == 0 {
		for _, e := range evidence {
			if _, err := os.Stat(e); err == nil {
				return damaged(path, fmt.Errorf("is empty (0 bytes) while %s exists: this data directory was used before, and its registry is gone", e))
			}
		}
		return nil // created by a first start that stopped before writing it
	}
	m, err := newestMeta(f)
	if err != nil {
		return damaged(path, err)
	}
	if need := int64(m.pages) * int64(m.pageSize); info.Size() < need {
		return damaged(path, fmt.Errorf("is truncated: it has %d bytes, and its last commit (transaction %d) needs %d", info.Size(), m.txid, need))
	}
	return nil
}

// damaged is Open's answer for a registry.db it will not use.
func damaged(path string, why error) error {
	return fmt.Errorf("embedded: %s %w (%w); meshd will not start on it: restore it from a backup, "+
		"or, to start with an empty registry on purpose, move it away (mv %s %s.damaged) and start meshd again",
		path, why, ErrDamaged, path, path)
}

// verify reads every bucket, key and value the database reaches, then runs
// bbolt's consistency check (freelist, page references, key order). Check
// runs on a goroutine of its own, where a memory fault would crash the
// process, so it runs only after the walk, under guard, has read every
// reachable page.
func verify(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return readAll(b) })
		if err != nil {
			return err
		}
		var errs []error
		for err := range tx.Check() {
			if len(errs) < 5 {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// readAll reads every key and value of b and its nested buckets.
func readAll(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nested := b.Bucket(k); nested != nil {
				return readAll(nested)
			}
		}
		_ = crc32.ChecksumIEEE(v) // touch every byte: a value past the end of the file faults here, under guard
		return nil
	})
}

// storagePanic is a panic, or a memory fault, of the storage layer that
// guard turned into an error.
type storagePanic struct {
	value any
	stack []byte
}

func (p *storagePanic) Error() string { return fmt.Sprintf("storage panic: %v", p.value) }

// guard runs fn with memory faults turned into panics, and returns a panic
// as a *storagePanic. bbolt panics on pages it cannot make sense of, and
// reading a mapped page past the end of a truncated file faults (SIGBUS)
// instead of failing.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = &storagePanic{value: p, stack: debug.Stack()}
		}
	}()
	return fn()
}
