package embedded

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

func TestDurabilityAcrossReopen(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	off := false
	custom := registry.VIP{Name: "payments", Policy: registry.Policy{
		Protocol:         registry.GRPC,
		SecurePort:       8443,
		Plaintext:        &off,
		LoadBalancing:    registry.LeastRequest,
		Retries:          registry.Retries{Attempts: 4, On: []string{"5xx", "reset"}},
		OutlierDetection: &registry.OutlierDetection{Consecutive5xx: 7},
	}}
	if _, err := e.s.PutVIP(ctx, custom); err != nil {
		t.Fatalf("PutVIP: %v", err)
	}
	a := instance("payments", 1)
	a.Zone, a.Weight, a.SecurePort = "eu-1a", 50, 8443
	a.Metadata = map[string]string{"version": "1.4.2", "canary": "true"}
	e.register(a)
	e.register(instance("payments", 2))
	e.register(instance("payments", 3))
	e.register(instance("ledger", 1)) // creates ledger with the default policy
	if _, err := e.s.SetStatus(ctx, "payments", "payments-2", registry.StatusDraining); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if err := e.s.Deregister(ctx, "payments", "payments-3"); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "gone"}); err != nil {
		t.Fatalf("PutVIP: %v", err)
	}
	if err := e.s.DeleteVIP(ctx, "gone"); err != nil {
		t.Fatalf("DeleteVIP: %v", err)
	}
	want := e.state()

	e.reopen()
	got := e.state()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("state after reopen (-before +after):\n%s", diff)
	}
	// Spot checks, so that a store that lost everything both times fails too.
	if len(got.VIPs) != 2 || got.VIPs[0].Name != "ledger" || got.VIPs[1].Name != "payments" {
		t.Fatalf("VIPs after reopen = %+v, want ledger and payments", got.VIPs)
	}
	if diff := cmp.Diff(custom.Policy.Normalize(), got.VIPs[1].Policy); diff != "" {
		t.Errorf("payments policy (-want +got):\n%s", diff)
	}
	p := got.Instances["payments"]
	if len(p) != 2 || p[0].Metadata["version"] != "1.4.2" || p[0].Zone != "eu-1a" || p[1].Status != registry.StatusDraining {
		t.Errorf("payments instances after reopen = %+v", p)
	}
}

func TestRegisterCreatesVIPWithDefaults(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got := e.register(instance("web", 1))
	if got.Status != registry.StatusUp || got.Weight != registry.DefaultWeight || got.TTL.D() != 10*time.Second {
		t.Errorf("Register returned %+v, want it normalized", got)
	}
	if !got.RegisteredAt.Equal(e.clock.Now()) || !got.RenewedAt.Equal(e.clock.Now()) {
		t.Errorf("RegisteredAt, RenewedAt = %v, %v, want both %v", got.RegisteredAt, got.RenewedAt, e.clock.Now())
	}
	err := e.s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVIPs).Get([]byte("web")) == nil {
			return errors.New("no key web in the vips bucket")
		}
		return nil
	})
	if err != nil {
		t.Errorf("created VIP not written with the instance: %v", err)
	}
	want := registry.VIP{Name: "web", Policy: registry.Policy{}.Normalize()}
	for _, phase := range []string{"before reopen", "after reopen"} {
		v, err := e.s.GetVIP(ctx, "web")
		if err != nil {
			t.Fatalf("%s: GetVIP: %v", phase, err)
		}
		if diff := cmp.Diff(want, v); diff != "" {
			t.Errorf("%s: VIP (-want +got):\n%s", phase, diff)
		}
		e.reopen()
	}
}

func TestRegisterReplaceKeepsRegisteredAt(t *testing.T) {
	e := newEnv(t)
	first := e.register(instance("web", 1))
	e.clock.Advance(time.Minute)
	again := instance("web", 1)
	again.Port = 9090
	got := e.register(again)
	if !got.RegisteredAt.Equal(first.RegisteredAt) {
		t.Errorf("RegisteredAt = %v, want the original %v", got.RegisteredAt, first.RegisteredAt)
	}
	if !got.RenewedAt.Equal(e.clock.Now()) || got.Port != 9090 {
		t.Errorf("replaced instance = %+v, want port 9090 renewed at %v", got, e.clock.Now())
	}
	if h := e.s.Health(); h.Instances != 1 {
		t.Errorf("Health().Instances = %d, want 1", h.Instances)
	}
}

func TestValidationStoresNothing(t *testing.T) {
	ctx := context.Background()
	bad := func(mut func(*registry.Instance)) registry.Instance {
		i := instance("web", 9)
		mut(&i)
		return i
	}
	tests := []struct {
		name  string
		field string
		write func(s *Store) error
	}{
		{"vip name", "name", func(s *Store) error {
			_, err := s.PutVIP(ctx, registry.VIP{Name: "Bad_Name"})
			return err
		}},
		{"vip protocol", "policy.protocol", func(s *Store) error {
			_, err := s.PutVIP(ctx, registry.VIP{Name: "web", Policy: registry.Policy{Protocol: "smtp"}})
			return err
		}},
		{"vip allowed caller", "policy.allowed_callers[1]", func(s *Store) error {
			_, err := s.PutVIP(ctx, registry.VIP{Name: "web", Policy: registry.Policy{AllowedCallers: &[]string{"orders", "Orders"}}})
			return err
		}},
		{"instance address", "address", func(s *Store) error {
			_, err := s.Register(ctx, bad(func(i *registry.Instance) { i.Address = "not-an-ip" }))
			return err
		}},
		{"instance port", "port", func(s *Store) error {
			_, err := s.Register(ctx, bad(func(i *registry.Instance) { i.Port = 0 }))
			return err
		}},
		{"instance of invalid new vip", "vip", func(s *Store) error {
			_, err := s.Register(ctx, bad(func(i *registry.Instance) { i.VIP = "-new" }))
			return err
		}},
		{"instance ttl", "ttl", func(s *Store) error {
			_, err := s.Register(ctx, bad(func(i *registry.Instance) { i.TTL = registry.Duration(time.Millisecond) }))
			return err
		}},
		{"replacing instance", "status", func(s *Store) error {
			_, err := s.Register(ctx, bad(func(i *registry.Instance) { i.ID, i.Status = "web-1", "SICK" }))
			return err
		}},
		{"status", "status", func(s *Store) error {
			_, err := s.SetStatus(ctx, "web", "web-1", "SICK")
			return err
		}},
	}
	e := newEnv(t)
	if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "web", Policy: registry.Policy{Protocol: registry.HTTP2}}); err != nil {
		t.Fatal(err)
	}
	e.register(instance("web", 1))
	before := e.state()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.write(e.s)
			var verr *registry.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("error = %v, want a *registry.ValidationError", err)
			}
			if verr.Field != tt.field {
				t.Errorf("ValidationError.Field = %q, want %q", verr.Field, tt.field)
			}
			if diff := cmp.Diff(before, e.state()); diff != "" {
				t.Errorf("state changed (-before +after):\n%s", diff)
			}
		})
	}
	e.reopen()
	if diff := cmp.Diff(before, e.state()); diff != "" {
		t.Errorf("state on disk changed (-before +after):\n%s", diff)
	}
}

func TestDeleteVIP(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		instances int
		vip       string
		wantErr   error
		wantMsg   string
	}{
		{name: "not found", vip: "nope", wantErr: registry.ErrNotFound},
		{name: "has instances", vip: "web", instances: 2, wantErr: registry.ErrConflict, wantMsg: "2 instance(s) still registered; deregister them first"},
		{name: "empty", vip: "web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "web"}); err != nil {
				t.Fatal(err)
			}
			for n := range tt.instances {
				e.register(instance("web", n))
			}
			before := e.state()
			err := e.s.DeleteVIP(ctx, tt.vip)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("DeleteVIP(%s) = %v, want %v containing %q", tt.vip, err, tt.wantErr, tt.wantMsg)
				}
				e.reopen()
				if diff := cmp.Diff(before, e.state()); diff != "" {
					t.Errorf("state changed (-before +after):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("DeleteVIP: %v", err)
			}
			e.reopen()
			if _, err := e.s.GetVIP(ctx, tt.vip); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("GetVIP after delete and reopen = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(instance("web", 1))
	tests := []struct {
		name string
		call func() error
	}{
		{"GetVIP", func() error { _, err := e.s.GetVIP(ctx, "nope"); return err }},
		{"Instances", func() error { _, err := e.s.Instances(ctx, "nope"); return err }},
		{"Lookup", func() error { _, err := e.s.Lookup(ctx, "nope"); return err }},
		{"SetStatus unknown vip", func() error { _, err := e.s.SetStatus(ctx, "nope", "web-1", registry.StatusDown); return err }},
		{"SetStatus unknown instance", func() error { _, err := e.s.SetStatus(ctx, "web", "web-2", registry.StatusDown); return err }},
		{"Deregister unknown vip", func() error { return e.s.Deregister(ctx, "nope", "web-1") }},
		{"Deregister unknown instance", func() error { return e.s.Deregister(ctx, "web", "web-2") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("error = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestReadsReturnCopies mutates everything a read or write hands back and
// checks that the store did not change.
func TestReadsReturnCopies(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	in := instance("web", 1)
	in.Metadata = map[string]string{"k": "v"}
	out := e.register(in)
	in.Metadata["k"] = "input mutated"
	out.Metadata["k"] = "output mutated"
	v, err := e.s.PutVIP(ctx, registry.VIP{Name: "web", Policy: registry.Policy{OutlierDetection: &registry.OutlierDetection{}}})
	if err != nil {
		t.Fatal(err)
	}
	v.Policy.Retries.On[0] = "mutated"
	*v.Policy.Plaintext = false
	v.Policy.OutlierDetection.Consecutive5xx = 99
	before := e.state()

	svc, err := e.s.Lookup(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	svc.Instances[0].Metadata["k"] = "lookup mutated"
	svc.VIP.Policy.Retries.On[0] = "mutated"
	list, _ := e.s.ListVIPs(ctx)
	*list[0].Policy.Plaintext = false
	got, _ := e.s.GetVIP(ctx, "web")
	got.Policy.OutlierDetection.Consecutive5xx = 99
	insts, _ := e.s.Instances(ctx, "web")
	insts[0].Metadata["k"] = "instances mutated"

	after := e.state()
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("store changed through a returned value (-before +after):\n%s", diff)
	}
	if after.Instances["web"][0].Metadata["k"] != "v" || after.VIPs[0].Policy.Retries.On[0] != registry.DefaultRetryOn[0] ||
		!after.VIPs[0].Policy.PlaintextAllowed() || after.VIPs[0].Policy.OutlierDetection.Consecutive5xx != 5 {
		t.Errorf("store changed through a returned value: %+v", after)
	}
}

func TestLookupSortsInstances(t *testing.T) {
	e := newEnv(t)
	for _, n := range []int{3, 1, 2} {
		e.register(instance("web", n))
	}
	svc, err := e.s.Lookup(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range svc.Instances {
		ids = append(ids, i.ID)
	}
	if diff := cmp.Diff([]string{"web-1", "web-2", "web-3"}, ids); diff != "" || svc.VIP.Name != "web" {
		t.Errorf("Lookup = %s with ids (-want +got):\n%s", svc.VIP.Name, diff)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	e := newEnv(t)
	_, err := Open(e.dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "in use by another meshd?") {
		t.Fatalf("second Open = %v, want an in-use error", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := s.PutVIP(context.Background(), registry.VIP{Name: "web"}); err == nil {
		t.Error("PutVIP after Close succeeded")
	}
	if _, err := s.GetVIP(context.Background(), "web"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("GetVIP after a failed write = %v, want ErrNotFound (memory untouched)", err)
	}
}
