package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Waits between registration attempts while meshd does not answer: doubling
// from retryMin up to retryMax.
const (
	retryMin = 200 * time.Millisecond
	retryMax = 5 * time.Second
	// callTimeout bounds each call to meshd made by the membership loop.
	callTimeout = 5 * time.Second
)

// member keeps one instance registered with meshd, Eureka-style: it
// registers (retrying until meshd answers, which may start later),
// heartbeats, registers again when meshd has forgotten the instance, and
// deregisters when it leaves.
type member struct {
	client    *api.Client
	vip, id   string
	reg       api.Registration
	heartbeat time.Duration
	logger    *slog.Logger

	// registered says whether meshd holds the instance as far as this
	// process knows. The loop sets it; leave reads it after the loop ended.
	registered atomic.Bool

	mu   sync.Mutex // serialises leave
	stop context.CancelFunc
	done chan struct{} // closed when the loop has returned
}

func newMember(client *api.Client, cfg config, logger *slog.Logger) *member {
	return &member{
		client: client,
		vip:    cfg.VIP,
		id:     cfg.Name,
		reg: api.Registration{
			Address:    cfg.Address,
			Port:       uint32(cfg.Port),
			SecurePort: uint32(cfg.SecurePort),
			Zone:       cfg.Zone,
			Status:     registry.StatusUp,
			TTLSeconds: int64(cfg.TTL / time.Second),
		},
		heartbeat: cfg.Heartbeat,
		logger:    logger,
	}
}

// start runs the membership loop in the background until ctx ends or leave
// is called. Call it once.
func (m *member) start(ctx context.Context) {
	ctx, m.stop = context.WithCancel(ctx)
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		m.run(ctx)
	}()
}

// leave stops the loop and deregisters the instance if it was registered.
// After a failed deregistration a second call tries again.
func (m *member) leave(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stop()
	<-m.done
	if !m.registered.Load() {
		m.logger.Info("left; the instance was not registered")
		return nil
	}
	err := m.client.Deregister(ctx, m.vip, m.id)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("deregister %s/%s from meshd: %w", m.vip, m.id, err)
	}
	m.registered.Store(false)
	m.logger.Info("left; deregistered from meshd")
	return nil
}

func (m *member) run(ctx context.Context) {
	if !m.registerUntilDone(ctx) {
		return
	}
	t := time.NewTicker(m.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.beat(ctx)
	}
}

// registerUntilDone registers, retrying with backoff, until it succeeds
// (true) or ctx ends (false).
func (m *member) registerUntilDone(ctx context.Context) bool {
	wait := retryMin
	for attempt := 1; ; attempt++ {
		err := m.register(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		m.logger.Warn("registration failed; retrying", "error", err, "attempt", attempt, "retry_in", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

func (m *member) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := m.client.Register(ctx, m.vip, m.id, m.reg); err != nil {
		return fmt.Errorf("register %s/%s with meshd: %w", m.vip, m.id, err)
	}
	m.registered.Store(true)
	m.logger.Info("registered", "address", m.reg.Address, "port", m.reg.Port,
		"secure_port", m.reg.SecurePort, "ttl_seconds", m.reg.TTLSeconds)
	return nil
}

// beat renews the lease once, and registers again if meshd no longer knows
// the instance. A failure is logged; the next tick tries again, which the
// lease (longer than the interval) allows for.
func (m *member) beat(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := m.client.Heartbeat(hctx, m.vip, m.id)
	switch {
	case err == nil || ctx.Err() != nil:
		return
	case isNotFound(err):
		m.logger.Warn("meshd no longer knows the instance; registering again", "error", err)
		if err := m.register(ctx); err != nil && ctx.Err() == nil {
			m.logger.Error("registering again failed; will retry at the next heartbeat", "error", err)
		}
	default:
		m.logger.Warn("heartbeat failed; will retry at the next heartbeat", "error", err)
	}
}

// isNotFound says whether meshd answered 404: no such instance (or VIP).
func isNotFound(err error) bool {
	apiErr, ok := errors.AsType[*api.Error](err)
	return ok && apiErr.Status == http.StatusNotFound
}
