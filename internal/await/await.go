// Package await is the one way tests wait for a state that no event
// signals: it polls a condition until it holds, and fails the test with
// what was awaited, and the last reason it did not hold, once a deadline
// passes. Where the code under test signals an event (a response received,
// discovery.Discovery.Sync, a channel closed), wait on the event instead.
package await

import (
	"errors"
	"testing"
	"time"
)

// Timeout bounds a wait: generous, since the race detector on two busy
// cores slows everything down; a wait that succeeds returns at once.
const Timeout = 10 * time.Second

// interval is the time between two polls.
const interval = 5 * time.Millisecond

var errNotYet = errors.New("not yet")

// True polls cond until it holds.
func True(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	TrueWithin(tb, Timeout, what, cond)
}

// TrueWithin is True with a deadline of its own (see Within).
func TrueWithin(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Within(tb, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// NoError polls f until it returns nil; the test fails with f's last error.
func NoError(tb testing.TB, what string, f func() error) {
	tb.Helper()
	Within(tb, Timeout, what, f)
}

// Within is NoError with a deadline of its own, for a wait whose bound is
// part of what the test shows (a TTL, a lease), or that must outlast one.
func Within(tb testing.TB, timeout time.Duration, what string, f func() error) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			if errors.Is(err, errNotYet) {
				tb.Fatalf("waiting for %s: not within %v", what, timeout)
			}
			tb.Fatalf("waiting for %s: not within %v: %v", what, timeout, err)
		case <-tb.Context().Done():
			tb.Fatalf("waiting for %s: the test ended", what)
		case <-tick.C:
		}
	}
}
