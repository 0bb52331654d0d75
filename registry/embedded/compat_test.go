package embedded

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestPreviousVersionDataLoads opens a registry.db holding records exactly
// as meshd wrote them at commit 06e54fe, before explicit zeros.
func TestPreviousVersionDataLoads(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]map[string]string{
		"meta": {"schema": "1"},
		"vips": {
			"payments": `{"name":"payments","policy":{"protocol":"http1","plaintext":true,"load_balancing":"round_robin","timeouts":{"connect":"1s","request":"15s","idle":"1h0m0s"},"retries":{"attempts":2,"on":["connect-failure","refused-stream","reset"],"budget_percent":20},"circuit_breakers":{"max_connections":1024,"max_pending_requests":1024,"max_requests":1024,"max_retries":3}}}`,
			"ledger":   `{"name":"ledger","policy":{"protocol":"grpc","port":7001,"plaintext":false,"load_balancing":"least_request","timeouts":{"connect":"250ms","request":"15s","idle":"1h0m0s"},"retries":{"attempts":4,"on":["5xx"],"per_try_timeout":"1s","budget_percent":12.5},"circuit_breakers":{"max_connections":1024,"max_pending_requests":1024,"max_requests":1024,"max_retries":3},"outlier_detection":{"consecutive_5xx":3,"interval":"10s","base_ejection_time":"30s","max_ejection_percent":50}}}`,
		},
		"instances": {
			"ledger/ledger-1": `{"id":"ledger-1","vip":"ledger","address":"10.0.0.7","port":8080,"secure_port":8443,"zone":"eu-1a","weight":1,"status":"UP","metadata":{"version":"1.4.2"},"ttl":"30s","registered_at":"2026-03-01T12:00:00Z","renewed_at":"2026-03-01T12:00:05Z"}`,
		},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for bucket, kvs := range records {
			b, err := tx.CreateBucket([]byte(bucket))
			if err != nil {
				return err
			}
			for k, v := range kvs {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	must(t, err, db.Close())

	e := &env{t: t, dir: dir, clock: newClock()}
	e.open()
	defer func() { _ = e.s.Close() }()
	no := false
	want := []registry.VIP{
		{Name: "ledger", Policy: registry.Policy{
			Protocol: registry.GRPC, Port: 7001, Plaintext: &no, LoadBalancing: registry.LeastRequest,
			Timeouts:         registry.Timeouts{Connect: registry.Duration(250 * time.Millisecond)},
			Retries:          registry.Retries{Attempts: 4, On: []string{"5xx"}, PerTry: registry.Duration(time.Second), BudgetPerc: 12.5},
			OutlierDetection: &registry.OutlierDetection{Consecutive5xx: 3},
		}.Normalize()},
		{Name: "payments", Policy: registry.Policy{}.Normalize()},
	}
	got, err := e.s.ListVIPs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("VIPs (-want +got):\n%s", diff)
	}
	insts, err := e.s.Instances(context.Background(), "ledger")
	if err != nil || len(insts) != 1 || insts[0].Weight != 1 || insts[0].Metadata["version"] != "1.4.2" ||
		!insts[0].RegisteredAt.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("instances of ledger = %+v, %v", insts, err)
	}
}
