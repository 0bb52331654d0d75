package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/metadata"

	"github.com/prisma-systems/xspace-mesh/names"
)

// TestPrivateKeysStayOutOfLogsDebugAndMetrics runs meshd, has a sidecar of
// payments fetch its identity over SDS with a token from meshctl, and then
// reads everything meshd exposes to people: its log, every debug endpoint,
// its config dump and its metrics. None may contain private key material.
func TestPrivateKeysStayOutOfLogsDebugAndMetrics(t *testing.T) {
	meshdBin, meshctlBin := binaries(t)
	data := t.TempDir()
	p := startMeshd(t, meshdBin, data)
	server := "http://" + strings.TrimPrefix(p.http, "http://")
	tok := strings.TrimSpace(meshctl(t, meshctlBin, server, "token", "issue", "--service", "payments",
		"--keyring", filepath.Join(data, "tokens.yaml")))

	key := fetchIdentityKey(t, p.xds, tok)
	if !strings.Contains(key, "PRIVATE KEY") {
		t.Fatalf("the identity secret carries no private key: %.40q", key)
	}
	keyBody := strings.Split(strings.TrimSpace(key), "\n")[1] // a line of the key's base64

	exposed := p.logged()
	for _, path := range []string{"/debug/proxies", "/debug/vips", "/debug/secrets", "/debug/config", "/metrics", "/readyz"} {
		resp, err := http.Get(server + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		exposed += string(b)
	}
	for _, secret := range []string{"PRIVATE KEY", keyBody, tok} {
		if strings.Contains(exposed, secret) {
			t.Fatalf("meshd exposes %.30q in its log, debug endpoints or metrics", secret)
		}
	}
	// The certificate itself is listed, with its expiry, for people.
	if !strings.Contains(exposed, `"service":"payments"`) || !strings.Contains(exposed, `"not_after"`) {
		t.Fatal("/debug/secrets does not list payments' certificate and its expiry")
	}
}

// fetchIdentityKey subscribes to xspace/identity as a sidecar holding tok
// and returns the private key it receives.
func fetchIdentityKey(t *testing.T, xdsAddr, tok string) string {
	t.Helper()
	secrets := fetchSecrets(t, xdsAddr, tok)
	return string(secrets[names.IdentitySecret].GetTlsCertificate().GetPrivateKey().GetInlineBytes())
}

// fetchIdentity returns the certificate chain of a sidecar's identity and
// the trust bundle, as a sidecar holding tok receives them.
func fetchIdentity(t *testing.T, xdsAddr, tok string) (chain, bundle []byte) {
	t.Helper()
	secrets := fetchSecrets(t, xdsAddr, tok)
	return secrets[names.IdentitySecret].GetTlsCertificate().GetCertificateChain().GetInlineBytes(),
		secrets[names.TrustBundleSecret].GetValidationContext().GetTrustedCa().GetInlineBytes()
}

// fetchSecrets subscribes to both mesh secrets over SDS as a sidecar of
// payments presenting tok.
func fetchSecrets(t *testing.T, xdsAddr, tok string) map[string]*tlsv3.Secret {
	t.Helper()
	conn, ctx := xdsConn(t, xdsAddr)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "payments-1", Cluster: "payments"}, TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: []string{names.IdentitySecret, names.TrustBundleSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 2 {
		t.Fatalf("secrets: resources %d, removed %v", len(resp.GetResources()), resp.GetRemovedResources())
	}
	out := map[string]*tlsv3.Secret{}
	for _, r := range resp.GetResources() {
		var sec tlsv3.Secret
		if err := r.GetResource().UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		out[r.GetName()] = &sec
	}
	return out
}
