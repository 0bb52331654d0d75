package embedded

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRegisterDurable measures durable registrations: each Register
// returns only once its write is fsynced. Writers goroutines register
// b.N distinct instances of one VIP between them; the metric is
// registrations per second. It uses nothing but Open and Register, so the
// same file runs unchanged at commit 06e54fe (one transaction per write),
// which is the baseline in BENCHMARKS.md.
func BenchmarkRegisterDurable(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{SweepInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			ctx := context.Background()
			if _, err := s.Register(ctx, instance("bench", b.N)); err != nil { // creates the VIP, outside the loop's ids
				b.Fatal(err)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Go(func() {
					for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
						if _, err := s.Register(ctx, instance("bench", int(i))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
		})
	}
}
