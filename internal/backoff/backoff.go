// Package backoff is how long to wait before retrying what failed:
// exponential from a first delay up to a cap, jittered so that callers that
// failed together do not retry together. Jitter only shortens a wait, so a
// cap is a promise: no wait is longer than Max.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff.
type Policy struct {
	// Min is the wait after the first failure; each further failure
	// doubles it, up to Max.
	Min, Max time.Duration
	// Jitter is the fraction, from 0 to 1, by which a wait is shortened at
	// random: the wait falls between (1-Jitter)·d and d.
	Jitter float64
}

// Delay is the wait after n consecutive failures (n >= 1), jittered.
func (p Policy) Delay(n int) time.Duration { return Jitter(p.Base(n), p.Jitter) }

// Base is the wait after n consecutive failures before jitter.
func (p Policy) Base(n int) time.Duration {
	d := p.Min
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Jitter shortens d at random by up to frac of it: the result falls
// between (1-frac)·d and d.
func Jitter(d time.Duration, frac float64) time.Duration {
	frac = min(max(frac, 0), 1)
	return d - time.Duration(frac*rand.Float64()*float64(d))
}

// Sleep waits for d or until ctx ends, and reports whether ctx is still
// live: the wait of a retry loop that stops with its context.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
