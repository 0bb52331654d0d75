package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/await"
)

// TestRegisterWithHeartbeat runs "instance register --heartbeat" with the
// shortest lease the registry allows and checks that it renews the lease,
// registers again when the registry forgets the instance, and deregisters
// when its context ends.
func TestRegisterWithHeartbeat(t *testing.T) {
	e := newTestEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := e.meshctlCtx(ctx, "", "instance", "register", "payments",
			"--id", "web-1", "--address", "10.0.0.12", "--port", "8080", "--ttl", "1s", "--heartbeat")
		done <- result{code, stdout, stderr}
	}()

	first := waitFor(t, done, "the instance to be registered", func() (time.Time, bool) {
		insts, err := e.store.Instances(t.Context(), "payments")
		if err != nil || len(insts) != 1 {
			return time.Time{}, false
		}
		return insts[0].RenewedAt, true
	})
	waitFor(t, done, "a heartbeat to renew the lease", func() (time.Time, bool) {
		insts, err := e.store.Instances(t.Context(), "payments")
		return time.Time{}, err == nil && len(insts) == 1 && insts[0].RenewedAt.After(first)
	})

	// The registry forgets the instance, as after an expiry: the next
	// heartbeat answers 404 and meshctl registers again.
	if err := e.store.Deregister(t.Context(), "payments", "web-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, done, "the instance to be registered again", func() (time.Time, bool) {
		insts, err := e.store.Instances(t.Context(), "payments")
		return time.Time{}, err == nil && len(insts) == 1
	})

	// Heartbeats fail twice in a row: meshctl logs, retries, and recovers.
	e.failHeartbeats.Store(true)
	waitFor(t, done, "two failed heartbeats", func() (time.Time, bool) {
		return time.Time{}, e.failedHeartbeats.Load() >= 2
	})
	e.failHeartbeats.Store(false)
	outageEnd := time.Now()
	renewedAfter := func(at time.Time) func() (time.Time, bool) {
		return func() (time.Time, bool) {
			insts, err := e.store.Instances(t.Context(), "payments")
			if err != nil || len(insts) != 1 || !insts[0].RenewedAt.After(at) {
				return time.Time{}, false
			}
			return insts[0].RenewedAt, true
		}
	}
	recovered := waitFor(t, done, "a heartbeat after the outage", renewedAfter(outageEnd))
	// meshctl sends the next heartbeat only once it handled that one.
	waitFor(t, done, "the heartbeat after that", renewedAfter(recovered))

	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("meshctl did not return after its context was cancelled")
	}
	if r.code != exitOK {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"registering again", "heartbeat failed; retrying", "heartbeat recovered", "deregistered"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, r.stderr)
		}
	}
	if insts, err := e.store.Instances(t.Context(), "payments"); err != nil || len(insts) != 0 {
		t.Errorf("after interrupt: %+v, %v; want the instance deregistered", insts, err)
	}
}

// waitFor polls cond until it holds and returns its value, failing the
// test if meshctl exits first.
func waitFor[T any](t *testing.T, done <-chan T, what string, cond func() (time.Time, bool)) time.Time {
	t.Helper()
	var v time.Time
	await.NoError(t, what, func() error {
		select {
		case r := <-done:
			t.Fatalf("meshctl exited while waiting for %s: %+v", what, r)
		default:
		}
		var ok bool
		if v, ok = cond(); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	return v
}
