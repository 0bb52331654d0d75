package secrets_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
)

// errIssuer is what a failing flaky issuer returns.
var errIssuer = errors.New("issuer unavailable")

// flaky decorates a real issuer: it records when Issue is called, and
// fails while told to.
type flaky struct {
	secrets.Issuer

	mu     sync.Mutex
	fail   bool
	issues []time.Time
	trust  []byte // replaces the trust bundle when set
}

func (f *flaky) Issue(ctx context.Context, service string) (secrets.Certificate, error) {
	f.mu.Lock()
	f.issues = append(f.issues, time.Now())
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return secrets.Certificate{}, errIssuer
	}
	return f.Issuer.Issue(ctx, service)
}

func (f *flaky) TrustBundle(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	trust, fail := f.trust, f.fail
	f.mu.Unlock()
	switch {
	case fail:
		return nil, errIssuer
	case trust != nil:
		return trust, nil
	}
	return f.Issuer.TrustBundle(ctx)
}

func (f *flaky) setFail(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *flaky) calls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.issues...)
}

// newCA opens an embedded CA in a fresh directory.
func newCA(t *testing.T, opts embedded.Options) *embedded.CA {
	t.Helper()
	ca, err := embedded.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// env is a manager under test over a flaky embedded CA, with its metrics
// registry and a channel of OnChange calls.
type env struct {
	t       *testing.T
	iss     *flaky
	m       *secrets.Manager
	reg     *prometheus.Registry
	changes chan string
}

func newEnv(t *testing.T, caOpts embedded.Options, opts secrets.ManagerOptions) *env {
	t.Helper()
	e := &env{t: t, iss: &flaky{Issuer: newCA(t, caOpts)}, reg: prometheus.NewRegistry(), changes: make(chan string, 100)}
	opts.Registerer = e.reg
	e.m = secrets.NewManager(e.iss, opts)
	e.m.OnChange(func(service string) { e.changes <- service })
	return e
}

// run starts the renewal loop until the test ends.
func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *env) acquire(service string) secrets.Certificate {
	e.t.Helper()
	c, err := e.m.Acquire(context.Background(), service)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitChange waits for OnChange(service).
func (e *env) waitChange(service string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-e.changes:
			if s == service {
				return
			}
		case <-deadline:
			e.t.Fatalf("no OnChange(%q) within %s", service, timeout)
		}
	}
}

// metric reads one sample of a metric, -1 when absent; labels are name,
// value pairs that must all match.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	if v, ok := promtest.Value(e.t, e.reg, name, labels...); ok {
		return v
	}
	return -1
}

// clock is a settable clock for ManagerOptions.Now and embedded.Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
