package server_test

import (
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/token"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

func testKeyring(t testing.TB, now time.Time) *token.Keyring {
	t.Helper()
	kr, err := token.NewKeyring([]token.Key{{ID: "k1", Secret: []byte(strings.Repeat("s", 32))}}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// streamError subscribes and returns the error the stream ends with, or
// nil if it was answered.
func streamError(t *testing.T, c *deltaClient) error {
	t.Helper()
	// A refused stream may be closed before this request is sent; its
	// status then comes from Recv.
	_ = c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: c.node, TypeUrl: cds, ResourceNamesSubscribe: []string{"payments.vip"}})
	select {
	case _, ok := <-c.resps:
		if ok {
			return nil
		}
	case <-time.After(5 * time.Second):
		t.Fatal("neither an answer nor an error within 5s")
	}
	_, err := c.stream.Recv()
	return err
}

func TestStreamAuthentication(t *testing.T) {
	now := time.Now()
	kr := testKeyring(t, now)
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator = kr })
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	good, _ := kr.Issue("orders", time.Hour)
	forged, _ := testKeyring(t, now).Issue("orders", time.Hour) // same key id, same secret: valid
	otherKey, _ := func() (string, error) {
		k, _ := token.NewKeyring([]token.Key{{ID: "k1", Secret: []byte(strings.Repeat("x", 32))}}, nil)
		return k.Issue("orders", time.Hour)
	}()
	expired, _ := testKeyring(t, now.Add(-2*time.Hour)).Issue("orders", time.Hour)

	tests := []struct {
		name, service, tok string
		want               codes.Code
	}{
		{"valid", "orders", good, codes.OK},
		{"same key on another replica", "orders", forged, codes.OK},
		{"no token", "orders", "", codes.Unauthenticated},
		{"signed with another key", "orders", otherKey, codes.Unauthenticated},
		{"expired", "orders", expired, codes.Unauthenticated},
		{"node claims another service", "payments", good, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := streamError(t, m.deltaAs(t, "n-"+tt.name, tt.service, tt.tok))
			if status.Code(err) != tt.want {
				t.Fatalf("stream ended with %v, want %v", err, tt.want)
			}
		})
	}
	if got := metricValue(t, m.reg, "xspace_xds_auth_failures_total"); got != 2 {
		t.Fatalf("auth failures = %v, want 2 (another key, expired)", got)
	}
}

func TestUnauthenticatedAllowedForPlaintext(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newMeshWith(t, func(o *server.Options) { o.Authenticator, o.AllowUnauthenticated = kr, true })
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	if err := streamError(t, m.deltaAs(t, "dev-1", "orders", "")); err != nil {
		t.Fatalf("unauthenticated stream refused although allowed: %v", err)
	}
	// A bad token is refused even so: it is a misconfiguration, not development.
	if err := streamError(t, m.deltaAs(t, "dev-2", "orders", "garbage")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token: %v, want Unauthenticated", err)
	}
}
