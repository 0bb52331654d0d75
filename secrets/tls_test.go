package secrets_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
)

// mtlsPair is what a handshake test needs: issued certificates of two
// services and a pool of the trust bundle.
type mtlsPair struct {
	a, b  tls.Certificate
	roots *x509.CertPool
}

func issuePair(t *testing.T, m *secrets.Manager) mtlsPair {
	t.Helper()
	var p mtlsPair
	for svc, dst := range map[string]*tls.Certificate{"a": &p.a, "b": &p.b} {
		c, err := m.Acquire(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		if *dst, err = c.TLSCertificate(); err != nil {
			t.Fatal(err)
		}
	}
	bundle, err := m.TrustBundle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(bundle) {
		t.Fatal("trust bundle holds no certificate")
	}
	return p
}

// serverConfig serves cert and requires a client certificate of clientID.
func serverConfig(cert tls.Certificate, roots *x509.CertPool, clientID string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		VerifyPeerCertificate: secrets.VerifyPeerSPIFFE(clientID), MinVersion: tls.VersionTLS13,
	}
}

// clientConfig presents cert and accepts only a server proving serverID.
// A SPIFFE-only server certificate has no DNS name for crypto/tls's own
// hostname check, so the chain is verified by VerifySPIFFEChain.
func clientConfig(cert tls.Certificate, roots *x509.CertPool, serverID string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, //nolint:gosec // verified by VerifySPIFFEChain
		VerifyPeerCertificate: secrets.VerifySPIFFEChain(roots, serverID), MinVersion: tls.VersionTLS13,
	}
}

// handshake runs one TLS handshake over a loopback connection and returns
// the client's and the server's errors, and what the server read.
func handshake(t *testing.T, client, server *tls.Config) (got string, clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	type result struct {
		err error
		got string
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, server)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(tc)
		done <- result{err: err, got: string(b)}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		_, err = conn.Write([]byte("hello"))
		_ = conn.Close()
	}
	r := <-done
	return r.got, err, r.err
}

func TestMutualTLSWithIssuedCertificates(t *testing.T) {
	m := secrets.NewManager(newCA(t, embedded.Options{}), secrets.ManagerOptions{})
	p := issuePair(t, m)
	a, b := names.SPIFFE("a"), names.SPIFFE("b")

	got, cerr, serr := handshake(t, clientConfig(p.a, p.roots, b), serverConfig(p.b, p.roots, a))
	if cerr != nil || serr != nil || got != "hello" {
		t.Fatalf("A to B: client error %v, server error %v, read %q; want a completed exchange", cerr, serr, got)
	}

	// The client expects another service behind the address: refused.
	_, cerr, _ = handshake(t, clientConfig(p.a, p.roots, names.SPIFFE("c")), serverConfig(p.b, p.roots, a))
	if !errors.Is(cerr, secrets.ErrPeerIdentity) || !strings.Contains(cerr.Error(), b) {
		t.Fatalf("client expecting c: error %v; want ErrPeerIdentity naming %s", cerr, b)
	}

	// The server accepts only c as its client: A is refused.
	_, _, serr = handshake(t, clientConfig(p.a, p.roots, b), serverConfig(p.b, p.roots, names.SPIFFE("c")))
	if !errors.Is(serr, secrets.ErrPeerIdentity) {
		t.Fatalf("server expecting c: error %v; want ErrPeerIdentity", serr)
	}
}

func TestMutualTLSRefusesAnotherCA(t *testing.T) {
	m := secrets.NewManager(newCA(t, embedded.Options{}), secrets.ManagerOptions{})
	p := issuePair(t, m)
	foreign := issuePair(t, secrets.NewManager(newCA(t, embedded.Options{}), secrets.ManagerOptions{}))
	a, b := names.SPIFFE("a"), names.SPIFFE("b")

	// The right identity from a CA the client does not trust.
	_, cerr, _ := handshake(t, clientConfig(p.a, p.roots, b), serverConfig(foreign.b, foreign.roots, a))
	var unknown x509.UnknownAuthorityError
	if !errors.As(cerr, &unknown) {
		t.Fatalf("server with a foreign certificate: client error %v; want an unknown authority", cerr)
	}
	_, _, serr := handshake(t, clientConfig(foreign.a, foreign.roots, b), serverConfig(p.b, p.roots, a))
	if serr == nil {
		t.Fatal("server accepted a client certificate from a foreign CA")
	}
}

func TestVerifyPeerSPIFFENeedsAVerifiedChain(t *testing.T) {
	m := secrets.NewManager(newCA(t, embedded.Options{}), secrets.ManagerOptions{})
	p := issuePair(t, m)
	// A client skipping verification with only the SAN check would accept
	// any self-made certificate naming b: the check refuses to run alone.
	client := &tls.Config{
		Certificates: []tls.Certificate{p.a}, InsecureSkipVerify: true, //nolint:gosec // the point of the test
		VerifyPeerCertificate: secrets.VerifyPeerSPIFFE(names.SPIFFE("b")),
	}
	_, cerr, _ := handshake(t, client, serverConfig(p.b, p.roots, names.SPIFFE("a")))
	if !errors.Is(cerr, secrets.ErrPeerIdentity) || !strings.Contains(cerr.Error(), "VerifySPIFFEChain") {
		t.Fatalf("client error %v; want a refusal pointing to VerifySPIFFEChain", cerr)
	}
}
