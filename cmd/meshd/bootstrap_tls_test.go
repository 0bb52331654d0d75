package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver of the proxyless client child
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/token"
	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

// secureMeshd is a meshd serving TLS on both listeners and requiring
// tokens on xDS.
type secureMeshd struct {
	*process
	data string       // its data directory, with the embedded CA in ca/
	web  *http.Client // trusts its CA
}

func startSecureMeshd(t *testing.T) *secureMeshd {
	t.Helper()
	meshdBin, _ := binaries(t)
	data := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(cfg, []byte("tls:\n  enabled: true\nxds:\n  allow_unauthenticated: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &secureMeshd{process: startMeshd(t, meshdBin, data, "--config", cfg), data: data}
	ca, err := os.ReadFile(m.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("the CA file holds no certificate")
	}
	m.web = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	return m
}

func (m *secureMeshd) caFile() string { return filepath.Join(m.data, "ca", "ca.crt") }

// put sends a PUT with a JSON body to the REST API.
func (m *secureMeshd) put(t *testing.T, path, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, m.http+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.web.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT %s: %s", path, resp.Status)
	}
}

// register registers instance 1 of vip at address:port.
func (m *secureMeshd) register(t *testing.T, vip, address string, port int) {
	t.Helper()
	m.put(t, "/v1/vips/"+vip+"/instances/"+vip+"-1", fmt.Sprintf(`{"address":%q,"port":%d}`, address, port))
}

// issueToken issues a service token from meshd's keyring in data.
func issueToken(t *testing.T, data, service string) string {
	t.Helper()
	kr, err := token.Load(filepath.Join(data, "tokens.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := kr.Issue(service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestEnvoyBootstrapOverTLS: what meshctl bootstrap --ca-file writes into
// an Envoy bootstrap (the xDS cluster's UpstreamTlsContext and the token in
// the initial metadata) is enough to complete a TLS handshake with meshd
// and be served, and the SAN it pins is one meshd's certificate carries.
//
// No Envoy runs here, so the client is grpc-go with a tls.Config built
// from the bootstrap's fields the way Envoy uses them: trusted_ca as the
// roots, match_typed_subject_alt_names as an exact URI SAN match after the
// chain verifies (source/common/tls/cert_validator/default_validator.cc,
// matchSubjectAltName; agrawroh/envoy at 321a098d81, after v1.37.0),
// alpn_protocols as the offered ALPN and sni as the server name.
func TestEnvoyBootstrapOverTLS(t *testing.T) {
	m := startSecureMeshd(t)
	m.register(t, "payments", "10.0.0.1", 8080)
	b, err := bootstrap.Envoy(bootstrap.EnvoyOptions{
		XDS: m.xds, Service: "orders", NodeID: "orders-1", Token: issueToken(t, m.data, "orders"), CAFile: m.caFile(),
	})
	if err != nil {
		t.Fatal(err)
	}
	upstream, auth := envoyXDSClient(t, b)
	cfg := envoyTLSConfig(t, upstream)
	conn, err := grpc.NewClient(m.xds, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	node := &corev3.Node{Id: "orders-1", Cluster: "orders"}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", auth)
	if res, err := probe.Resolve(ctx, conn, node, "payments.vip"); err != nil || len(res.Endpoints.GetEndpoints()) != 1 {
		t.Fatalf("xDS as the bootstrap configures it: %+v, %v", res, err)
	}
	if _, err := probe.Resolve(t.Context(), conn, node, "payments.vip"); err == nil {
		t.Error("xDS over TLS without the bootstrap's token was served; meshd requires tokens here")
	}
}

// envoyXDSClient returns, from an Envoy bootstrap, the xDS cluster's
// UpstreamTlsContext and the authorization header of the ADS gRPC service.
func envoyXDSClient(t *testing.T, yml []byte) (*tlsv3.UpstreamTlsContext, string) {
	t.Helper()
	j, err := yaml.YAMLToJSON(yml)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &bs); err != nil {
		t.Fatalf("the bootstrap does not parse as Envoy's Bootstrap: %v", err)
	}
	var auth string
	for _, h := range bs.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetInitialMetadata() {
		if h.GetKey() == "authorization" {
			auth = h.GetValue()
		}
	}
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != names.XDSCluster {
			continue
		}
		var up tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
			t.Fatalf("the xDS cluster has no TLS transport socket: %v", err)
		}
		return &up, auth
	}
	t.Fatalf("no %s cluster in the bootstrap", names.XDSCluster)
	return nil, ""
}

// envoyTLSConfig is the client side of an UpstreamTlsContext, as Envoy
// applies it (see TestEnvoyBootstrapOverTLS).
func envoyTLSConfig(t *testing.T, up *tlsv3.UpstreamTlsContext) *tls.Config {
	t.Helper()
	vc := up.GetCommonTlsContext().GetValidationContext()
	ca, err := os.ReadFile(vc.GetTrustedCa().GetFilename())
	if err != nil {
		t.Fatalf("trusted_ca: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("trusted_ca holds no certificate")
	}
	var uris []string
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI || m.GetMatcher().GetExact() == "" {
			t.Fatalf("unexpected SAN matcher %v", m)
		}
		uris = append(uris, m.GetMatcher().GetExact())
	}
	if len(uris) == 0 {
		t.Fatal("the bootstrap pins no SAN: any certificate of the CA would be meshd")
	}
	return &tls.Config{
		NextProtos: up.GetCommonTlsContext().GetAlpnProtocols(),
		ServerName: up.GetSni(),
		// Envoy verifies the chain and the SAN matchers itself; so does
		// this, below. The host name check is not Envoy's.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			for _, u := range leaf.URIs {
				if slices.Contains(uris, u.String()) {
					return nil
				}
			}
			return fmt.Errorf("no SAN of meshd's certificate (%v) matches %v", leaf.URIs, uris)
		},
	}
}

// grpcChildEnv names the target the proxyless client child calls; the
// child is this test binary, run with it set (see TestProxylessChild).
const grpcChildEnv = "XSPACE_TEST_PROXYLESS_TARGET"

// TestProxylessBootstrapOverTLS: grpc-go's xds:/// resolver, started from
// the bootstrap meshctl bootstrap --grpc --ca-file --token-file writes,
// speaks TLS to meshd and authenticates with the token file as call
// credentials (gRFC A97), then calls a gRPC backend through the VIP.
// Without GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS, grpc-go (v1.85)
// ignores call_creds and meshd refuses the stream. The client runs in a
// child process because grpc-go reads that variable once, at start.
func TestProxylessBootstrapOverTLS(t *testing.T) {
	m := startSecureMeshd(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	m.put(t, "/v1/vips/greeter", `{"policy":{"protocol":"grpc"}}`)
	m.register(t, "greeter", "127.0.0.1", lis.Addr().(*net.TCPAddr).Port)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "orders.token")
	if err := os.WriteFile(tokenFile, []byte(issueToken(t, m.data, "orders")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := bootstrap.GRPC(bootstrap.GRPCOptions{
		XDS: m.xds, Service: "orders", CAFile: m.caFile(), TokenFile: tokenFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	bootstrapFile := filepath.Join(dir, "xds-bootstrap.json")
	if err := os.WriteFile(bootstrapFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	child := func(callCreds string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestProxylessChild$", "-test.v")
		cmd.Env = append(os.Environ(), grpcChildEnv+"=xds:///greeter.vip", "GRPC_XDS_BOOTSTRAP="+bootstrapFile,
			"GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS="+callCreds)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := child("true"); err != nil || !strings.Contains(out, "SERVING") {
		t.Fatalf("proxyless client over TLS with its token: %v\n%s", err, out)
	}
	if out, err := child("false"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("proxyless client without call credentials: %v, want a refusal for its missing token:\n%s", err, out)
	}
}

// TestProxylessChild is the proxyless client of
// TestProxylessBootstrapOverTLS; run alone, it skips.
func TestProxylessChild(t *testing.T) {
	target := os.Getenv(grpcChildEnv)
	if target == "" {
		t.Skip("the child of TestProxylessBootstrapOverTLS")
	}
	// The calls themselves go to the VIP's plaintext (.vip) cluster.
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("status:", res.GetStatus())
}
