// Package secrets hands out the mesh's workload certificates: each service's
// identity (an X.509 certificate with the URI SAN names.SPIFFE(service)) and
// the trust bundle that verifies them. An Issuer is a certificate source, the
// embedded CA (secrets/embedded) or Vault PKI (secrets/vault); the Manager
// caches what an Issuer returns, renews it at about half its lifetime, keeps
// serving the cached certificate while the Issuer fails (retrying before it
// expires, whatever the backoff), withdraws it a moment before its NotAfter
// if it could not be renewed, retries an identity a proxy holds but could
// not be given until it is issued, and tells the xDS side when a
// certificate rotates, is issued at last, or is withdrawn.
//
// Private keys never leave this package's values in printable form:
// Certificate formats, logs and marshals to JSON with its key redacted, and
// the metrics and debug views carry no key and no per-service label.
package secrets

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/prisma-systems/xspace-mesh/names"
)

// Issuer is a certificate source: the embedded CA or Vault PKI.
type Issuer interface {
	// Issue returns a new certificate for service, with the URI SAN
	// names.SPIFFE(service) and a fresh private key.
	Issue(ctx context.Context, service string) (Certificate, error)
	// TrustBundle returns the PEM certificates that verify issued ones.
	TrustBundle(ctx context.Context) ([]byte, error)
}

// Redacted replaces a private key wherever a Certificate is printed.
const Redacted = "REDACTED"

// Certificate is one service's identity. Its private key is redacted in
// every printed form (fmt verbs, slog, JSON); only KeyPEM itself holds it.
type Certificate struct {
	Service string
	// CertPEM is the leaf certificate followed by any intermediates.
	CertPEM []byte
	// KeyPEM is the leaf's private key. Never log it.
	KeyPEM []byte
	// TrustPEM is the issuing chain, when the issuer returns one.
	TrustPEM  []byte
	NotBefore time.Time
	NotAfter  time.Time
	// Serial is the leaf's serial number in colon-separated hex.
	Serial string
}

// certificateView is a Certificate without its key: what JSON and slog show.
type certificateView struct {
	Service    string    `json:"service"`
	Serial     string    `json:"serial"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	CertPEM    string    `json:"cert_pem,omitempty"`
	TrustPEM   string    `json:"trust_pem,omitempty"`
	PrivateKey string    `json:"private_key,omitempty"`
}

func (c Certificate) view() certificateView {
	v := certificateView{
		Service: c.Service, Serial: c.Serial, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		CertPEM: string(c.CertPEM), TrustPEM: string(c.TrustPEM),
	}
	if len(c.KeyPEM) > 0 {
		v.PrivateKey = Redacted
	}
	return v
}

// String describes the certificate without its key.
func (c Certificate) String() string {
	key := "none"
	if len(c.KeyPEM) > 0 {
		key = Redacted
	}
	return fmt.Sprintf("certificate of %q (serial %s, valid %s to %s, key %s)", c.Service, c.Serial,
		c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), key)
}

// GoString is String, so %#v does not print the key either.
func (c Certificate) GoString() string { return c.String() }

// Format prints String for every verb, so no verb (%d, %x, %+v) reaches
// the key bytes.
func (c Certificate) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue logs the certificate's identity and validity, never its key.
func (c Certificate) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("service", c.Service),
		slog.String("serial", c.Serial),
		slog.Time("not_after", c.NotAfter),
	)
}

// MarshalJSON writes the certificate with "private_key": "REDACTED".
func (c Certificate) MarshalJSON() ([]byte, error) { return json.Marshal(c.view()) }

// Lifetime is NotAfter - NotBefore.
func (c Certificate) Lifetime() time.Duration { return c.NotAfter.Sub(c.NotBefore) }

// ValidAt reports whether now is within the certificate's validity.
func (c Certificate) ValidAt(now time.Time) bool {
	return !now.Before(c.NotBefore) && now.Before(c.NotAfter)
}

// TLSCertificate returns the certificate and key for crypto/tls.
func (c Certificate) TLSCertificate() (tls.Certificate, error) {
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("secrets: key pair of %q: %w", c.Service, err)
	}
	return pair, nil
}

// NewCertificate checks an issued certificate and fills in its validity
// and serial: certPEM must start with a leaf whose only URI SAN is
// names.SPIFFE(service) and whose public key matches keyPEM.
func NewCertificate(service string, certPEM, keyPEM, trustPEM []byte) (Certificate, error) {
	certs, err := ParsePEMCertificates(certPEM)
	if err != nil {
		return Certificate{}, fmt.Errorf("secrets: certificate of %q: %w", service, err)
	}
	leaf := certs[0]
	want := names.SPIFFE(service)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		return Certificate{}, fmt.Errorf("secrets: certificate of %q has URI SANs %v; want exactly %s", service, leaf.URIs, want)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Certificate{}, fmt.Errorf("secrets: key of %q: %w", service, err)
	}
	pub, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !publicKeyEqual(pub.Public(), leaf.PublicKey) {
		return Certificate{}, fmt.Errorf("secrets: key of %q does not match its certificate", service)
	}
	return Certificate{
		Service: service, CertPEM: certPEM, KeyPEM: keyPEM, TrustPEM: trustPEM,
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Serial: FormatSerial(leaf.SerialNumber),
	}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// ParsePEMCertificates parses every CERTIFICATE block of b, in order. It
// fails when b holds none or when a block does not parse.
func ParsePEMCertificates(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// EncodePEMCertificates writes certificates as concatenated PEM blocks.
func EncodePEMCertificates(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// FormatSerial writes a serial number as Vault does: lower-case hex bytes
// separated by colons.
func FormatSerial(n *big.Int) string {
	b := n.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}
