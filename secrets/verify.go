package secrets

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrPeerIdentity is returned (wrapped) by the function VerifyPeerSPIFFE
// builds when the peer is not the expected identity.
var ErrPeerIdentity = errors.New("unexpected peer identity")

// VerifyPeerSPIFFE returns a tls.Config.VerifyPeerCertificate function that
// accepts only a peer whose verified leaf certificate carries exactly one
// URI SAN, equal to want (a names.SPIFFE identity). It runs after crypto/tls
// has verified the chain against RootCAs (client) or ClientCAs (server), and
// refuses a connection whose chain was not verified, so it cannot be
// combined with InsecureSkipVerify by mistake.
func VerifyPeerSPIFFE(want string) func(rawCerts [][]byte, chains [][]*x509.Certificate) error {
	return func(_ [][]byte, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 {
			return fmt.Errorf("secrets: %w: no verified chain to check for %s (with InsecureSkipVerify, use VerifySPIFFEChain)", ErrPeerIdentity, want)
		}
		leaf := chains[0][0]
		switch {
		case len(leaf.URIs) == 0:
			return fmt.Errorf("secrets: %w: peer certificate has no URI SAN; want %s", ErrPeerIdentity, want)
		case len(leaf.URIs) > 1:
			return fmt.Errorf("secrets: %w: peer certificate has %d URI SANs %v; want exactly %s", ErrPeerIdentity, len(leaf.URIs), leaf.URIs, want)
		case leaf.URIs[0].String() != want:
			return fmt.Errorf("secrets: %w: peer is %s; want %s", ErrPeerIdentity, leaf.URIs[0], want)
		}
		return nil
	}
}

// VerifySPIFFEChain returns a tls.Config.VerifyPeerCertificate function
// for a client with InsecureSkipVerify set, as a client of a SPIFFE-only
// server must be (crypto/tls would check the server's certificate for a
// DNS name it does not have): it verifies the peer's chain against roots
// (the trust bundle) for server authentication itself, then checks the
// identity as VerifyPeerSPIFFE does.
func VerifySPIFFEChain(roots *x509.CertPool, want string) func(rawCerts [][]byte, chains [][]*x509.Certificate) error {
	check := VerifyPeerSPIFFE(want)
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return fmt.Errorf("secrets: %w: the peer sent no certificate; want %s", ErrPeerIdentity, want)
		}
		certs := make([]*x509.Certificate, len(rawCerts))
		for i, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("secrets: peer certificate %d: %w", i+1, err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		chains, err := certs[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("secrets: peer certificate for %s: %w", want, err)
		}
		return check(rawCerts, chains)
	}
}
