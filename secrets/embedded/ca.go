// Package embedded is the default certificate source on one machine: a CA
// whose root lives in the data directory (ca.crt, and ca.key with mode
// 0600), created on first use and reused afterwards. It issues ECDSA P-256
// leaf certificates whose only identity is the URI SAN
// names.SPIFFE(service), usable as TLS server and client certificates.
package embedded

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
)

var _ secrets.Issuer = (*CA)(nil)

// Defaults and fixed parameters of the embedded CA.
const (
	// DefaultLifetime is a leaf certificate's lifetime when Options names none.
	DefaultLifetime = 24 * time.Hour
	// Backdate is how far before issue a leaf's NotBefore lies, so peers
	// whose clocks lag a little accept it.
	Backdate = time.Minute
	// RootLifetime is the lifetime of a root created by Open.
	RootLifetime = 10 * 365 * 24 * time.Hour
	// CertFile and KeyFile are the root's file names in the CA directory.
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
	// PreviousFile, in the CA directory, holds earlier roots (PEM) that
	// stay trusted while certificates they issued are still in use: a CA
	// rotation moves ca.crt there (README, "Rotating the embedded CA").
	// Its roots sign nothing; they only join the trust bundle.
	PreviousFile = "previous.crt"
	// RootCommonName is the subject of a root created by Open.
	RootCommonName = "xspace-mesh embedded root CA"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// Lifetime of issued leaf certificates; default 24h.
	Lifetime time.Duration
	// Logger receives the CA's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// CA is the embedded certificate authority. It is immutable after Open and
// safe for concurrent use.
type CA struct {
	root     *x509.Certificate
	key      *ecdsa.PrivateKey
	rootPEM  []byte
	lifetime time.Duration
	now      func() time.Time
	log      *slog.Logger
}

// Open loads the root from dir, or creates it there when dir holds no
// ca.crt. A ca.key readable by anyone but its owner is refused. The trust
// bundle is the root, then the unexpired roots of dir/previous.crt.
func Open(dir string, opts Options) (*CA, error) {
	ca := &CA{lifetime: opts.Lifetime, now: opts.Now, log: opts.Logger}
	if ca.lifetime == 0 {
		ca.lifetime = DefaultLifetime
	}
	if ca.lifetime < 0 {
		return nil, fmt.Errorf("embedded CA: lifetime %s must be positive", ca.lifetime)
	}
	if ca.now == nil {
		ca.now = time.Now
	}
	if ca.log == nil {
		ca.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ca.log = ca.log.With("component", "embedded_ca")
	root, key, created, err := loadOrCreateRoot(dir, ca.now())
	if err != nil {
		return nil, err
	}
	previous, err := loadPrevious(filepath.Join(dir, PreviousFile), ca.now(), ca.log)
	if err != nil {
		return nil, err
	}
	ca.root, ca.key, ca.rootPEM = root, key, secrets.EncodePEMCertificates(append([]*x509.Certificate{root}, previous...)...)
	if created {
		ca.log.Info("created the embedded root CA", "dir", dir, "not_after", root.NotAfter)
	} else {
		ca.log.Info("loaded the embedded root CA", "dir", dir, "not_after", root.NotAfter)
	}
	return ca, nil
}

// Issue returns a new leaf certificate for service, valid from a minute ago
// for the configured lifetime (cut to the root's own NotAfter).
func (ca *CA) Issue(ctx context.Context, service string) (secrets.Certificate, error) {
	return ca.issue(ctx, service, nil)
}

// IssueServing returns meshd's serving certificate: Issue's for
// names.ControlPlane, with hosts as its DNS or IP SANs.
func (ca *CA) IssueServing(ctx context.Context, hosts []string) (secrets.Certificate, error) {
	if len(hosts) == 0 {
		return secrets.Certificate{}, errors.New("embedded CA: a serving certificate needs at least one host name or address")
	}
	return ca.issue(ctx, names.ControlPlane, hosts)
}

func (ca *CA) issue(ctx context.Context, service string, hosts []string) (secrets.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: issue %q: %w", service, err)
	}
	if err := names.ValidateVIP(service); err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: issue: %w", err)
	}
	now := ca.now()
	if !now.Before(ca.root.NotAfter) {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: root expired at %s; move %s and %s aside to create a new root",
			ca.root.NotAfter.Format(time.RFC3339), CertFile, KeyFile)
	}
	id, err := url.Parse(names.SPIFFE(service))
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: identity of %q: %w", service, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: key for %q: %w", service, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: serial for %q: %w", service, err)
	}
	// X.509 times have whole seconds: round up, so that a certificate
	// lives at least the configured lifetime.
	notAfter := now.Add(ca.lifetime)
	if t := notAfter.Truncate(time.Second); t.Before(notAfter) {
		notAfter = t.Add(time.Second)
	}
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// An empty subject: the identity is the URI SAN, which Go then
		// marks critical as RFC 5280 requires.
		Subject:               pkix.Name{},
		URIs:                  []*url.URL{id},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: sign certificate of %q: %w", service, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: key of %q: %w", service, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := secrets.NewCertificate(service, certPEM, keyPEM, ca.rootPEM)
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("embedded CA: %w", err)
	}
	ca.log.Debug("issued certificate", "certificate", cert)
	return cert, nil
}

// loadPrevious returns the unexpired CA certificates of path, none when it
// does not exist.
func loadPrevious(path string, now time.Time, log *slog.Logger) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("embedded CA: previous roots: %w", err)
	}
	certs, err := secrets.ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("embedded CA: previous roots in %s: %w", path, err)
	}
	var out []*x509.Certificate
	for _, c := range certs {
		switch {
		case !c.IsCA:
			return nil, fmt.Errorf("embedded CA: %s holds %q, which is not a CA certificate; it may hold earlier roots only", path, c.Subject)
		case !now.Before(c.NotAfter):
			log.Warn("an earlier root has expired; it is no longer trusted, remove it", "file", path, "not_after", c.NotAfter)
		default:
			log.Info("trusting an earlier root during a CA rotation; remove it once no certificate it issued is in use",
				"file", path, "subject", c.Subject.String(), "not_after", c.NotAfter)
			out = append(out, c)
		}
	}
	return out, nil
}

// TrustBundle returns the root certificate, then earlier roots still
// trusted, in PEM.
func (ca *CA) TrustBundle(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedded CA: trust bundle: %w", err)
	}
	return ca.rootPEM, nil
}

// Root returns the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Lifetime returns the lifetime of issued leaf certificates.
func (ca *CA) Lifetime() time.Duration { return ca.lifetime }

// randomSerial returns a positive random serial of up to 128 bits.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
