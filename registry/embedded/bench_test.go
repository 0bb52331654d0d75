package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkLookup measures the read path discovery uses, with 10,000 VIPs of
// 3 instances each. The data is written in one bbolt transaction (one fsync
// per Register would make the setup take minutes) and loaded by Open.
func BenchmarkLookup(b *testing.B) {
	const vips = 10_000
	s := openPopulated(b, vips)
	names := make([]string, vips)
	for v := range names {
		names[v] = fmt.Sprintf("svc-%05d", v)
	}
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := s.Lookup(ctx, names[i%vips]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := s.Lookup(ctx, names[i%vips]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// openPopulated opens a store of n VIPs (populate), with its sweeper
// idle, closed when b ends.
func openPopulated(b *testing.B, n int) *Store {
	b.Helper()
	dir := b.TempDir()
	populate(b, dir, n)
	s, err := Open(dir, Options{SweepInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if h := s.Health(); h.VIPs != n || h.Instances != 3*n || h.Overdue != 0 {
		b.Fatalf("loaded %d VIPs and %d instances, %d overdue; want %d, %d, none", h.VIPs, h.Instances, h.Overdue, n, 3*n)
	}
	return s
}

// populate writes n VIPs named svc-NNNNN with 3 instances each straight to
// bbolt in one transaction.
func populate(b *testing.B, dir string, n int) {
	b.Helper()
	db, err := openDB(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		for v := range n {
			name := fmt.Sprintf("svc-%05d", v)
			if err := putVIP(tx, defaultVIP(name)); err != nil {
				return err
			}
			for i := range 3 {
				inst := instance(name, i).Normalize()
				inst.Metadata = map[string]string{"version": "1.0.0"}
				inst.RegisteredAt, inst.RenewedAt = now, now
				if err := putInstance(tx, inst); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSweep: one lease sweep over 10,000 VIPs with 3 instances each,
// none overdue. steady: the sweeps a store makes while its fleet renews
// (nothing to look at until the earliest deadline passes, lease.go);
// full: every sweep looks at every lease, as each did before nextDue
// (forced by forgetting it).
func BenchmarkSweep(b *testing.B) {
	s := openPopulated(b, 10_000)
	for _, mode := range []string{"steady", "full"} {
		b.Run(mode, func(b *testing.B) {
			s.Sweep()
			for b.Loop() {
				if mode == "full" {
					s.nextDue.Store(nil)
				}
				s.Sweep()
			}
		})
	}
}
