package consul

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	capi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul/consultest"
)

// consulBin is the Consul binary the tests run; "" skips them.
var consulBin string

func TestMain(m *testing.M) {
	bin, err := consultest.Bin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consul tests:", err)
		os.Exit(1)
	}
	if bin == "" {
		fmt.Println(consultest.SkipMessage)
	}
	consulBin = bin
	os.Exit(m.Run())
}

// env is a real Consul agent, a store on it and a raw client to it.
type env struct {
	t     testing.TB
	agent *consultest.Agent
	reg   *prometheus.Registry
	s     *Store
	raw   *capi.Client
}

// newEnv starts a Consul agent and a store on it, or skips the test (once
// announced by TestMain) when there is no Consul binary.
func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	if consulBin == "" {
		t.SkipNow()
	}
	return newEnvOn(t, consultest.Start(t, consulBin), opts)
}

// newEnvOn makes a store on a running agent.
func newEnvOn(t testing.TB, a *consultest.Agent, opts Options) *env {
	t.Helper()
	e := &env{t: t, agent: a, reg: prometheus.NewRegistry()}
	e.s = e.open(opts)
	raw, err := capi.NewClient(&capi.Config{Address: a.Addr})
	if err != nil {
		t.Fatal(err)
	}
	e.raw = raw
	return e
}

// open makes a store on the agent with fast retries; the test closes it.
func (e *env) open(opts Options) *Store {
	e.t.Helper()
	opts.Address = e.agent.Addr
	if opts.Registerer == nil {
		opts.Registerer = e.reg
	}
	setDefault(&opts.RetryInterval, 20*time.Millisecond)
	setDefault(&opts.MaxRetryInterval, 200*time.Millisecond)
	setDefault(&opts.WaitTime, 10*time.Second)
	s, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

func (e *env) register(inst registry.Instance) registry.Instance {
	e.t.Helper()
	got, err := e.s.Register(context.Background(), inst)
	if err != nil {
		e.t.Fatalf("Register %s/%s: %v", inst.VIP, inst.ID, err)
	}
	return got
}

// native registers a service with the agent directly, as a Consul user
// would, with a TTL check "ttl:<id>" in the given state.
func (e *env) native(reg *capi.AgentServiceRegistration, checkStatus string) {
	e.t.Helper()
	if checkStatus != "" {
		reg.Check = &capi.AgentServiceCheck{CheckID: "ttl:" + reg.ID, TTL: "1h", Status: checkStatus}
	}
	if err := e.raw.Agent().ServiceRegister(reg); err != nil {
		e.t.Fatalf("register %s with consul: %v", reg.ID, err)
	}
}

func (e *env) lookup(vip string) registry.Service {
	e.t.Helper()
	svc, err := e.s.Lookup(context.Background(), vip)
	if err != nil {
		e.t.Fatalf("Lookup %s: %v", vip, err)
	}
	return svc
}

// metric reads one sample of a metric from the store's registry and fails
// the test when there is none; labels are name, value pairs that must all
// match.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	v, ok := promtest.Value(e.t, e.reg, name, labels...)
	if !ok {
		e.t.Fatalf("no metric %s%v", name, labels)
	}
	return v
}

// eventually retries f until it succeeds or timeout passes (await.Within;
// f's error says what is awaited).
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	await.Within(t, timeout, "a Consul test's condition", f)
}

// healthy waits until the store's health is OK (want) or degraded (!want).
func (e *env) healthy(want bool, timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, func() error {
		if h := e.s.Health(); h.OK() != want {
			return fmt.Errorf("health %+v, want OK %v", h, want)
		}
		return nil
	})
}

func instance(vip, id, addr string) registry.Instance {
	return registry.Instance{VIP: vip, ID: id, Address: addr, Port: 8080}
}
