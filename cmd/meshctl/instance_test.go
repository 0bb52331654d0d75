package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

// leaseColumn returns the LEASE cell of each row of an instance table.
func leaseColumn(t *testing.T, table string) []string {
	t.Helper()
	rows := strings.Split(strings.TrimSpace(table), "\n")
	col := slices.Index(strings.Fields(rows[0]), "LEASE")
	if col < 0 {
		t.Fatalf("no LEASE column:\n%s", table)
	}
	var out []string
	for _, r := range rows[1:] {
		out = append(out, strings.Fields(r)[col])
	}
	return out
}

// TestInstanceListShowsOverdue: an instance whose lease ran out is shown as
// overdue, in the table and in JSON, before any sweep removes it.
func TestInstanceListShowsOverdue(t *testing.T) {
	clock := testclock.New(time.Now())
	e := newTestEnvWith(t, embedded.Options{Now: clock.Now, SweepInterval: time.Hour})
	for _, id := range []string{"web-1", "web-2"} {
		e.mustRun(t, "instance", "register", "payments", "--id", id, "--address", "10.0.0.1", "--port", "8080", "--ttl", "10s")
	}
	if got := leaseColumn(t, e.mustRun(t, "instance", "list", "payments")); !slices.Equal(got, []string{"ok", "ok"}) {
		t.Fatalf("fresh leases shown as %v, want ok, ok", got)
	}
	clock.Advance(11 * time.Second)
	if _, err := e.client.Heartbeat(t.Context(), "payments", "web-2"); err != nil {
		t.Fatal(err)
	}
	if got := leaseColumn(t, e.mustRun(t, "instance", "list", "payments")); !slices.Equal(got, []string{"overdue", "ok"}) {
		t.Errorf("after web-1 missed its lease: %v, want overdue, ok", got)
	}
	var insts []api.Instance
	if err := json.Unmarshal([]byte(e.mustRun(t, "instance", "list", "payments", "-o", "json")), &insts); err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 || insts[0].Lease != registry.LeaseOverdue || insts[1].Lease != registry.LeaseOK {
		t.Errorf("JSON listing: %+v, want web-1 lease overdue, web-2 ok", insts)
	}
}

// TestRegisterRefusesZeroWeightAndTTL: --weight 0 and --ttl 0s are refused
// before anything is sent, saying what to do instead.
func TestRegisterRefusesZeroWeightAndTTL(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		flag, value, says string
	}{
		{"--weight", "0", "DRAINING"},
		{"--ttl", "0s", "at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			code, _, stderr := e.meshctl(t, "", "instance", "register", "payments", "--address", "10.0.0.1", "--port", "80", tt.flag, tt.value)
			if code != exitUsage || !strings.Contains(stderr, tt.says) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, stderr, exitUsage, tt.says)
			}
		})
	}
	if vips, _ := e.store.ListVIPs(t.Context()); len(vips) != 0 {
		t.Errorf("refused registrations stored %v", vips)
	}
}
