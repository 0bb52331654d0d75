package vault_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/vault"
	"github.com/prisma-systems/xspace-mesh/secrets/vault/vaulttest"
)

// vaultBin is the Vault binary the tests run; "" skips them.
var vaultBin string

func TestMain(m *testing.M) {
	bin, err := vaulttest.Bin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vault tests:", err)
		os.Exit(1)
	}
	if bin == "" {
		fmt.Println(vaulttest.SkipMessage)
	}
	vaultBin = bin
	os.Exit(m.Run())
}

// requireVault returns the Vault binary, or skips the test (once announced
// by TestMain) when there is none.
func requireVault(t *testing.T) string {
	t.Helper()
	if vaultBin == "" {
		t.SkipNow()
	}
	return vaultBin
}

// env is a Vault server with a PKI, and a metrics registry for the issuer.
type env struct {
	t   *testing.T
	srv *vaulttest.Server
	pki vaulttest.PKI
	reg *prometheus.Registry
}

// startDev starts a dev server with the mesh's PKI (role TTL ttl).
func startDev(t *testing.T, o vaulttest.PKIOptions) *env {
	t.Helper()
	srv := vaulttest.Start(t, requireVault(t))
	return &env{t: t, srv: srv, pki: vaulttest.SetupPKI(t, srv.Client(t), o), reg: prometheus.NewRegistry()}
}

// issuer returns an issuer of the env's PKI; opts may set auth and TTL.
func (e *env) issuer(opts vault.Options) *vault.Issuer {
	e.t.Helper()
	opts.Address = e.srv.Addr
	if opts.Mount == "" {
		opts.Mount = e.pki.Mount
	}
	if opts.Role == "" {
		opts.Role = e.pki.Role
	}
	if opts.Token == "" && opts.AppRole == nil {
		opts.Token = e.srv.Client(e.t).Token()
	}
	opts.Registerer = e.reg
	iss, err := vault.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return iss
}

// token creates a token with the given policies through the root client.
func (e *env) token(req *api.TokenCreateRequest) string {
	e.t.Helper()
	s, err := e.srv.Client(e.t).Auth().Token().Create(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Auth.ClientToken
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

// manager runs a Manager over iss until the test ends, with a channel of
// its OnChange calls.
func manager(t *testing.T, iss secrets.Issuer, opts secrets.ManagerOptions) (*secrets.Manager, chan string) {
	t.Helper()
	m := secrets.NewManager(iss, opts)
	changes := make(chan string, 100)
	m.OnChange(func(s string) { changes <- s })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m, changes
}

func waitChange(t *testing.T, changes chan string, service string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-changes:
			if s == service {
				return
			}
		case <-deadline:
			t.Fatalf("no OnChange(%q) within %s", service, timeout)
		}
	}
}

// handshake runs a mutual TLS handshake over a pipe: the client presents
// client and expects the server to prove serverID; the server presents
// server and requires a client certificate of clientID.
func handshake(t *testing.T, client, server secrets.Certificate, bundle []byte, clientID, serverID string) error {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("empty trust bundle")
	}
	cc, err := client.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := server.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := net.Pipe()
	defer func() { _ = c1.Close(); _ = c2.Close() }()
	srv := tls.Server(c2, &tls.Config{
		Certificates: []tls.Certificate{sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		VerifyPeerCertificate: secrets.VerifyPeerSPIFFE(clientID), MinVersion: tls.VersionTLS13,
	})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake(); _ = c2.Close() }()
	cli := tls.Client(c1, &tls.Config{
		Certificates: []tls.Certificate{cc}, InsecureSkipVerify: true, //nolint:gosec // verified by VerifySPIFFEChain
		VerifyPeerCertificate: secrets.VerifySPIFFEChain(roots, serverID), MinVersion: tls.VersionTLS13,
	})
	cerr := cli.Handshake()
	_ = c1.Close()
	if serr := <-errc; cerr == nil && serr != nil {
		return serr
	}
	return cerr
}
