package server_test

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/token"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

const sds = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// newSecureMesh is a mesh whose streams authenticate with tokens of kr and
// whose secrets come from a real embedded CA.
func newSecureMesh(t *testing.T, kr *token.Keyring, lifetime time.Duration) *mesh {
	t.Helper()
	ca, err := embedded.Open(t.TempDir(), embedded.Options{Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	mgr := secrets.NewManager(ca, secrets.ManagerOptions{})
	go mgr.Run(t.Context())
	return newMeshCerts(t, func(o *server.Options) { o.Authenticator, o.AllowUnauthenticated = kr, true }, mgr)
}

func identitySAN(t *testing.T, r *discoveryv3.Resource) string {
	t.Helper()
	var sec tlsv3.Secret
	if err := r.GetResource().UnmarshalTo(&sec); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if block == nil || len(sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == 0 {
		t.Fatalf("identity secret lacks a certificate or key")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || len(cert.URIs) != 1 {
		t.Fatalf("identity certificate: %v, URIs %v", err, cert.URIs)
	}
	return cert.URIs[0].String()
}

func TestSDSServesEachStreamItsOwnIdentity(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newSecureMesh(t, kr, time.Hour)
	for _, svc := range []string{"payments", "orders"} {
		tok, _ := kr.Issue(svc, time.Hour)
		c := m.deltaAs(t, svc+"-1", svc, tok)
		c.subscribe(sds, names.IdentitySecret, names.TrustBundleSecret)
		r := c.recv()
		got := map[string]*discoveryv3.Resource{}
		for _, res := range r.GetResources() {
			got[res.GetName()] = res
		}
		if got[names.TrustBundleSecret] == nil || got[names.IdentitySecret] == nil {
			t.Fatalf("%s got %v removed %v", svc, resourceNames(r), r.GetRemovedResources())
		}
		if san := identitySAN(t, got[names.IdentitySecret]); san != names.SPIFFE(svc) {
			t.Fatalf("%s was served the identity %s", svc, san)
		}
	}
}

func TestSDSNeverServesIdentityWithoutAuthentication(t *testing.T) {
	m := newSecureMesh(t, testKeyring(t, time.Now()), time.Hour)
	c := m.deltaAs(t, "anon-1", "payments", "")
	// The client even claims the authenticated-service metadata itself.
	c.node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{names.NodeServiceKey: structpb.NewStringValue("payments")}}
	c.subscribe(sds, names.IdentitySecret, names.TrustBundleSecret)
	r := c.recv()
	if !slices.Equal(resourceNames(r), []string{names.TrustBundleSecret}) || !slices.Equal(r.GetRemovedResources(), []string{names.IdentitySecret}) {
		t.Fatalf("unauthenticated stream got %v removed %v; want only the trust bundle", resourceNames(r), r.GetRemovedResources())
	}
}

func TestSDSPushesRotation(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newSecureMesh(t, kr, 4*time.Second) // renewed at about half: ~2 s
	tok, _ := kr.Issue("payments", time.Hour)
	c := m.deltaAs(t, "payments-1", "payments", tok)
	c.subscribe(sds, names.IdentitySecret)
	first := c.recv().GetResources()[0].GetVersion()
	r := c.recv() // the renewal, pushed without any request
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetVersion() == first {
		t.Fatalf("rotation: got %v", resourceNames(r))
	}
	if v, ok := m.cache.Version(cache.Item{TypeURL: sds, Name: names.IdentitySecret, Scope: "payments"}); !ok || v == first {
		t.Fatalf("cache holds %q, %v after rotation", v, ok)
	}
}
