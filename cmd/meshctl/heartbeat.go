package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
)

// minRetry is the shortest wait before retrying a failed heartbeat.
const minRetry = 100 * time.Millisecond

// keeper keeps one instance's lease alive until its context ends, then
// deregisters it.
type keeper struct {
	client   *api.Client
	vip, id  string
	reg      api.Registration
	interval time.Duration // between heartbeats: TTL/3
	timeout  time.Duration // for the final deregistration
	logger   *slog.Logger
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil)).With("component", "meshctl")
}

// run renews the lease every interval, registering again when the server
// no longer knows the instance, and retrying failures with backoff capped at
// the interval, so a lease of three intervals survives two lost heartbeats.
// When ctx ends it deregisters the instance.
func (k *keeper) run(ctx context.Context) error {
	k.logger.Info("keeping the lease alive; interrupt to deregister", "interval", k.interval)
	timer := time.NewTimer(jitter(k.interval))
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return k.deregister()
		case <-timer.C:
		}
		if err := k.beat(ctx); err != nil && ctx.Err() == nil {
			failures++
			wait := k.backoff(failures)
			k.logger.Error("heartbeat failed; retrying", "error", err, "retry_in", wait, "failures", failures)
			timer.Reset(wait)
			continue
		}
		if failures > 0 {
			k.logger.Info("heartbeat recovered", "after_failures", failures)
			failures = 0
		}
		timer.Reset(jitter(k.interval))
	}
}

// beat renews the lease once, or registers again if the lease is gone. A
// heartbeat slower than the interval counts as failed.
func (k *keeper) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, k.interval)
	defer cancel()
	_, err := k.client.Heartbeat(ctx, k.vip, k.id)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		return err
	}
	k.logger.Warn("the server no longer knows the instance; registering again", "reason", apiErr.Message)
	if _, err := k.client.Register(ctx, k.vip, k.id, k.reg); err != nil {
		return err
	}
	k.logger.Info("registered again")
	return nil
}

// backoff is the wait after the n-th failure in a row: an eighth of the
// interval, doubling, capped at the interval.
func (k *keeper) backoff(n int) time.Duration {
	wait := max(k.interval/8, minRetry)
	for i := 1; i < n && wait < k.interval; i++ {
		wait *= 2
	}
	return min(wait, k.interval)
}

func (k *keeper) deregister() error {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	if err := k.client.Deregister(ctx, k.vip, k.id); err != nil {
		k.logger.Error("deregistration failed; the lease will expire", "error", err)
		return err
	}
	k.logger.Info("deregistered")
	return nil
}

// jitter spreads d by ±10% so that instances started together do not
// heartbeat in lockstep.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}
