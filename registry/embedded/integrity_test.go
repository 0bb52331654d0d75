package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// seeded returns a data directory whose registry.db holds 3 VIPs of 40
// instances each (enough for several pages), written and closed.
func seeded(t *testing.T) (dir, path string) {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: newClock()}
	e.open()
	for _, vip := range []string{"api", "web", "db"} {
		for i := range 40 {
			e.register(instance(vip, i))
		}
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	return e.dir, filepath.Join(e.dir, dbFile)
}

// fileMeta reads the newest meta page of a registry.db and its offset.
func fileMeta(t *testing.T, path string) (boltMeta, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	m0, _ := readMeta(f, 0)
	m1, ok := readMeta(f, defaultPageSize)
	if ok && m1.txid > m0.txid {
		return m1, defaultPageSize
	}
	return m0, 0
}

// rewriteMeta changes one 8-byte field of the newest meta page at byte
// offset field (within the meta) and fixes its checksum, as bbolt would
// have written it.
func rewriteMeta(t *testing.T, path string, field int, v uint64) {
	t.Helper()
	_, off := fileMeta(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := b[off+metaOffset:]
	binary.NativeEndian.PutUint64(p[field:], v)
	h := fnv.New64a()
	_, _ = h.Write(p[:metaSummed])
	binary.NativeEndian.PutUint64(p[metaSummed:], h.Sum64())
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// patch writes data at offset off of the file at path.
func patch(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesDamagedFile: each damage makes Open fail with ErrDamaged,
// naming the file and what to do, instead of crashing or starting empty.
// It is long because of its table: one damage per row.
func TestOpenRefusesDamagedFile(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir, path string)
		why    string
	}{
		{"empty beside the CA", func(t *testing.T, dir, path string) {
			must(t, os.WriteFile(path, nil, 0o600), os.Mkdir(filepath.Join(dir, "ca"), 0o700))
		}, "is empty (0 bytes) while"},
		{"empty beside the keyring", func(t *testing.T, dir, path string) {
			must(t, os.WriteFile(path, nil, 0o600), os.WriteFile(filepath.Join(dir, "tokens.yaml"), []byte("keys: []\n"), 0o600))
		}, "is empty (0 bytes) while"},
		{"truncated to half", func(t *testing.T, _, path string) {
			info, err := os.Stat(path)
			must(t, err, os.Truncate(path, info.Size()/2))
		}, "is truncated"},
		{"truncated inside a page", func(t *testing.T, _, path string) {
			m, _ := fileMeta(t, path)
			must(t, os.Truncate(path, int64(m.pages-1)*int64(m.pageSize)+100))
		}, "is truncated"},
		{"headers overwritten", func(t *testing.T, _, path string) {
			patch(t, path, 0, make([]byte, 2*defaultPageSize))
		}, "has no valid header"},
		{"not a database", func(t *testing.T, _, path string) {
			must(t, os.WriteFile(path, []byte("vips:\n  payments: {}\n"), 0o600))
		}, "has no valid header"},
		{"freelist page of another type", func(t *testing.T, _, path string) {
			m, off := fileMeta(t, path)
			freelist := readUint64(t, path, off+metaOffset+32)
			patch(t, path, int64(freelist)*int64(m.pageSize)+8, []byte{0x02, 0x00}) // flags: leaf
		}, "cannot be opened: storage panic: invalid freelist page"},
		{"root bucket past the last page", func(t *testing.T, _, path string) {
			rewriteMeta(t, path, 16, 1<<20)
		}, "fails a consistency check: storage panic"},
		{"data pages overwritten", func(t *testing.T, _, path string) {
			m, _ := fileMeta(t, path)
			junk := []byte(strings.Repeat("\xde\xad\xbe\xef", int(m.pageSize)/4))
			for pg := int64(2); pg < int64(m.pages); pg++ {
				patch(t, path, pg*int64(m.pageSize), junk)
			}
		}, ""},
		{"a record that is not JSON", func(t *testing.T, _, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			must(t, err, db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketVIPs).Put([]byte("web"), []byte("{not json"))
			}), db.Close())
		}, "holds data meshd cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, path := seeded(t)
			tt.damage(t, dir, path)
			reg := prometheus.NewRegistry()
			s, err := Open(dir, Options{Registerer: reg, Evidence: []string{filepath.Join(dir, "ca"), filepath.Join(dir, "tokens.yaml")}})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded on a damaged registry.db")
			}
			msg := err.Error()
			if !errors.Is(err, ErrDamaged) || !strings.Contains(msg, tt.why) {
				t.Errorf("Open = %v, want ErrDamaged saying %q", err, tt.why)
			}
			for _, says := range []string{path, "restore it from a backup", "mv " + path + " " + path + ".damaged"} {
				if !strings.Contains(msg, says) {
					t.Errorf("the error does not say %q: %s", says, msg)
				}
			}
			if families, _ := reg.Gather(); len(families) != 0 {
				t.Errorf("a failed Open left %d metric families registered", len(families))
			}
		})
	}
}

func readUint64(t *testing.T, path string, off int64) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var b [8]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenStartsFresh: a missing registry.db is a fresh start even beside a
// CA (moving the file away is how one starts over on purpose), and so is an
// empty one in a directory never used before.
func TestOpenStartsFresh(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"no file beside the CA", func(t *testing.T, dir string) { must(t, os.Mkdir(filepath.Join(dir, "ca"), 0o700)) }},
		{"empty file, nothing else", func(t *testing.T, dir string) { must(t, os.WriteFile(filepath.Join(dir, dbFile), nil, 0o600)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			s, err := Open(dir, Options{Evidence: []string{filepath.Join(dir, "ca")}})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer func() { _ = s.Close() }()
			if _, err := s.Register(context.Background(), instance("web", 1)); err != nil {
				t.Errorf("Register on the fresh store: %v", err)
			}
		})
	}
}

// TestStorageFaultFailsStoreNotProcess truncates registry.db under an open
// store: bbolt then faults (SIGBUS) reading its mapped pages. The write gets
// an error, the store refuses writes from then on and says so, reads and
// heartbeats keep working, and the process lives.
func TestStorageFaultFailsStoreNotProcess(t *testing.T) {
	dir, path := seeded(t)
	reg := prometheus.NewRegistry()
	s, err := Open(dir, Options{Registerer: reg, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must(t, os.Truncate(path, 2*defaultPageSize))
	if _, err := s.Register(ctx, instance("web", 99)); !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "storage failed") {
		t.Fatalf("Register on a truncated file = %v, want ErrUnavailable saying the storage failed", err)
	}
	if err := s.Deregister(ctx, "web", "web-1"); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("a later write = %v, want ErrUnavailable", err)
	}
	if h := s.Health(); !strings.Contains(h.Failed, "restart meshd") || h.Instances != 120 {
		t.Errorf("Health() = %+v, want the failure and the 120 instances still served", h)
	}
	if err := s.Heartbeat(ctx, "web", "web-1"); err != nil {
		t.Errorf("Heartbeat after the failure: %v", err)
	}
	if v, ok := promtest.Value(t, reg, "xspace_registry_storage_failures_total"); !ok || v != 1 {
		t.Errorf("xspace_registry_storage_failures_total = %v (found %v), want 1", v, ok)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "storage failure") {
		t.Errorf("Close = %v, want an error about the storage failure", err)
	}
}
