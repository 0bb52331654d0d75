package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// callTimeout bounds each call to meshd made by the membership loop.
const callTimeout = 5 * time.Second

// member keeps the demo instance registered with meshd (api.Member) in the
// background, until the process stops or /admin/leave asks it to leave.
type member struct {
	m *api.Member

	mu   sync.Mutex // serialises leave
	stop context.CancelFunc
	done chan struct{} // closed when the loop has returned
}

func newMember(client *api.Client, cfg config, logger *slog.Logger) *member {
	return &member{m: &api.Member{
		Client: client, VIP: cfg.VIP, ID: cfg.Name,
		Registration: api.Registration{
			Address:    cfg.Address,
			Port:       uint32(cfg.Port),
			SecurePort: uint32(cfg.SecurePort),
			Zone:       cfg.Zone,
			Status:     registry.StatusUp,
			TTLSeconds: int64(cfg.TTL / time.Second),
		},
		Interval: cfg.Heartbeat, CallTimeout: callTimeout, Logger: logger,
	}}
}

// start runs the membership loop in the background until ctx ends or leave
// is called. Call it once.
func (m *member) start(ctx context.Context) {
	ctx, m.stop = context.WithCancel(ctx)
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		if err := m.m.Run(ctx); err != nil {
			m.m.Logger.Error("meshd refused the registration; not registered", "error", err)
		}
	}()
}

// leave stops the loop and deregisters the instance if it was registered.
// After a failed deregistration a second call tries again.
func (m *member) leave(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stop()
	<-m.done
	return m.m.Leave(ctx)
}
