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
	dir := b.TempDir()
	populate(b, dir, vips)
	s, err := Open(dir, Options{SweepInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if h := s.Health(); h.VIPs != vips {
		b.Fatalf("loaded %d VIPs, want %d", h.VIPs, vips)
	}
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
	const vips = 10_000
	dir := b.TempDir()
	populate(b, dir, vips)
	s, err := Open(dir, Options{SweepInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if h := s.Health(); h.Instances != 3*vips || h.Overdue != 0 {
		b.Fatalf("loaded %d instances, %d overdue; want %d, none", h.Instances, h.Overdue, 3*vips)
	}
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
