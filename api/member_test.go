package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/prisma-systems/xspace-mesh/api"
)

// TestMemberStopsOnARefusedRegistration: a registration meshd refuses for
// what it is (here, no port) ends Run with meshd's error rather than
// retrying forever; nothing is registered and Leave has nothing to do.
func TestMemberStopsOnARefusedRegistration(t *testing.T) {
	s := newTestServer(t)
	m := &api.Member{Client: s.client, VIP: "payments", ID: "web-1", Registration: api.Registration{Address: "10.0.0.1"}}
	err := m.Run(t.Context())
	apiErr, ok := errors.AsType[*api.Error](err)
	if !ok || apiErr.Status != http.StatusBadRequest || apiErr.Field != "port" {
		t.Fatalf("Run = %v; want meshd's 400 about the port", err)
	}
	if m.Registered() {
		t.Fatal("Registered() after a refused registration")
	}
	if err := m.Leave(context.Background()); err != nil {
		t.Fatalf("Leave after a refused registration: %v", err)
	}
	if insts, err := s.client.Instances(t.Context(), "payments"); !api.IsNotFound(err) && len(insts) != 0 {
		t.Fatalf("instances after a refused registration: %+v, %v", insts, err)
	}
}
