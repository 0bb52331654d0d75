package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/registry"
)

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// env is a store under test with its clock and metrics registry.
type env struct {
	t     testing.TB
	dir   string
	clock *testclock.Clock
	reg   *prometheus.Registry
	s     *Store
}

// newEnv opens a store in a fresh directory. The background sweeper runs
// hourly, so tests decide when sweeps happen.
func newEnv(t testing.TB) *env {
	e := &env{t: t, dir: t.TempDir(), clock: newClock()}
	e.open()
	t.Cleanup(func() {
		if err := e.s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	s, err := Open(e.dir, Options{Registerer: e.reg, SweepInterval: time.Hour, Now: e.clock.Now})
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.s = s
}

// reopen closes the store and opens the same directory again.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.open()
}

func (e *env) register(inst registry.Instance) registry.Instance {
	e.t.Helper()
	got, err := e.s.Register(context.Background(), inst)
	if err != nil {
		e.t.Fatalf("Register(%s/%s): %v", inst.VIP, inst.ID, err)
	}
	return got
}

func (e *env) heartbeat(vip, id string) {
	e.t.Helper()
	if err := e.s.Heartbeat(context.Background(), vip, id); err != nil {
		e.t.Fatalf("Heartbeat(%s/%s): %v", vip, id, err)
	}
}

// ids lists the instance ids of a VIP, nil if it does not exist.
func (e *env) ids(vip string) []string {
	e.t.Helper()
	insts, err := e.s.Instances(context.Background(), vip)
	if err != nil {
		return nil
	}
	var out []string
	for _, i := range insts {
		out = append(out, i.ID)
	}
	return out
}

// state is everything a store holds, for before/after comparisons.
type state struct {
	VIPs      []registry.VIP
	Instances map[string][]registry.Instance
}

func (e *env) state() state {
	e.t.Helper()
	ctx := context.Background()
	vips, err := e.s.ListVIPs(ctx)
	if err != nil {
		e.t.Fatalf("ListVIPs: %v", err)
	}
	st := state{VIPs: vips, Instances: map[string][]registry.Instance{}}
	for _, v := range vips {
		insts, err := e.s.Instances(ctx, v.Name)
		if err != nil {
			e.t.Fatalf("Instances(%s): %v", v.Name, err)
		}
		st.Instances[v.Name] = insts
	}
	return st
}

// instance returns a valid instance of vip numbered n.
func instance(vip string, n int) registry.Instance {
	return registry.Instance{
		ID:      fmt.Sprintf("%s-%d", vip, n),
		VIP:     vip,
		Address: fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255),
		Port:    8080,
		TTL:     registry.Duration(10 * time.Second),
	}
}
