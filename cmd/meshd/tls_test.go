package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

// startTLSMeshd starts meshd with TLS on both listeners, its certificate
// from the embedded CA (one-minute certificates renewed after a tenth),
// and returns it with the CA's certificates.
func startTLSMeshd(t *testing.T) (*process, *x509.CertPool) {
	t.Helper()
	meshdBin, _ := binaries(t)
	data := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := "tls:\n  enabled: true\nsecrets:\n  renew_at: 0.1\n  embedded:\n    lifetime: 1m\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startMeshd(t, meshdBin, data, "--config", cfg)
	if !strings.HasPrefix(p.http, "https://") {
		t.Fatalf("meshd reports its HTTP address as %s, want https://", p.http)
	}
	ca, err := os.ReadFile(filepath.Join(data, "ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("the CA file holds no certificate")
	}
	return p, pool
}

// handshake connects to addr with crypto/tls and returns the serial of the
// certificate meshd presented.
func handshake(addr string, cfg *tls.Config) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// TestTLSOnBothListeners: with tls.enabled, meshd's HTTP and xDS listeners
// complete real TLS handshakes (crypto/tls, net/http and grpc-go clients)
// with a certificate of the embedded CA naming localhost and 127.0.0.1;
// a client trusting another CA, or expecting another name, is refused, as
// is a plaintext one; and a renewed certificate is served without a
// restart.
func TestTLSOnBothListeners(t *testing.T) {
	p, pool := startTLSMeshd(t)
	httpAddr := strings.TrimPrefix(p.http, "https://")

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := hc.Get("https://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET /healthz over TLS: %s", resp.Status)
	}

	for _, addr := range []string{httpAddr, p.xds} {
		for _, name := range []string{"localhost", "127.0.0.1"} {
			if _, err := handshake(addr, &tls.Config{RootCAs: pool, ServerName: name}); err != nil {
				t.Errorf("%s as %s: %v", addr, name, err)
			}
		}
		var unknownCA x509.UnknownAuthorityError
		if _, err := handshake(addr, &tls.Config{RootCAs: otherCA(t), ServerName: "localhost"}); !errors.As(err, &unknownCA) {
			t.Errorf("%s with another CA: %v; want an unknown authority", addr, err)
		}
		var wrongName x509.HostnameError
		if _, err := handshake(addr, &tls.Config{RootCAs: pool, ServerName: "meshd.example"}); !errors.As(err, &wrongName) {
			t.Errorf("%s as meshd.example: %v; want a certificate not valid for that name", addr, err)
		}
	}
	if resp, err := http.Get("http://" + httpAddr + "/v1/vips"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext HTTP to the TLS listener: %s; want 400", resp.Status)
		}
	}

	// The REST API over TLS registers an instance, which grpc-go (as a
	// proxyless client or meshctl resolve connects) then resolves over TLS.
	req, err := http.NewRequest(http.MethodPut, "https://"+httpAddr+"/v1/vips/payments/instances/p1", strings.NewReader(`{"address":"10.0.0.1","port":8080}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("register over TLS: %v %v", resp, err)
	} else {
		_ = resp.Body.Close()
	}
	conn, err := grpc.NewClient(p.xds, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if res, err := probe.Resolve(t.Context(), conn, &corev3.Node{Id: "tls-1", Cluster: "orders"}, "payments.vip"); err != nil || len(res.Endpoints.GetEndpoints()) != 1 {
		t.Fatalf("xDS over TLS with grpc-go: %+v, %v", res, err)
	}
	plain, err := grpc.NewClient(p.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Close() }()
	if _, err := probe.Resolve(t.Context(), plain, &corev3.Node{Id: "plain-1", Cluster: "orders"}, "payments.vip"); err == nil {
		t.Fatal("xDS in plaintext to the TLS listener succeeded")
	}

	// Rotation: the certificate is renewed after 6 of its 60 s; the next
	// handshakes present the new one, from the same process.
	first, err := handshake(p.xds, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 30*time.Second, "a renewed serving certificate", func() error {
		for _, addr := range []string{p.xds, httpAddr} {
			serial, err := handshake(addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
			if err != nil {
				return err
			}
			if serial == first {
				return fmt.Errorf("%s still serves serial %s", addr, first)
			}
		}
		return nil
	})
}

// otherCA is a pool holding one self-signed CA that issued nothing meshd has.
func otherCA(t *testing.T) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestRefusesToServeInsecurelyBeyondLoopback: a listener on every
// interface without TLS, or with requests without a token allowed, stops
// meshd at start with the settings to change; insecure_on_purpose starts
// it.
func TestRefusesToServeInsecurelyBeyondLoopback(t *testing.T) {
	meshdBin, _ := binaries(t)
	out, err := runToExit(t, meshdBin, "--data-dir", t.TempDir(), "--xds-address", "0.0.0.0:0", "--http-address", "127.0.0.1:0")
	if exitCode(err) != 2 {
		t.Fatalf("meshd on 0.0.0.0 without TLS: %v, want exit status 2\n%s", err, out)
	}
	for _, want := range []string{
		"xds.address: 0.0.0.0:0 is reachable beyond this machine", "tls.enabled: true", "insecure_on_purpose: true",
		"xds.allow_unauthenticated: streams without a token would be served beyond this machine",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(cfg, []byte("insecure_on_purpose: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startMeshd(t, meshdBin, t.TempDir(), "--config", cfg, "--xds-address", "0.0.0.0:0")
	if !strings.Contains(p.logged(), "insecure") {
		t.Errorf("meshd serving insecurely on purpose does not warn:\n%s", p.logged())
	}
}
