package secrets

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"

	"github.com/prisma-systems/xspace-mesh/names"
)

// ServingIssuer issues the certificate meshd serves its own listeners with.
type ServingIssuer interface {
	// IssueServing returns a certificate for names.ControlPlane (its URI
	// SAN) that also names hosts (DNS or IP SANs), for server
	// authentication.
	IssueServing(ctx context.Context, hosts []string) (Certificate, error)
}

// WithServing returns iss, except that it issues names.ControlPlane's
// certificate through s, for hosts: so the one Manager that renews the
// services' identities renews meshd's serving certificate too.
func WithServing(iss Issuer, s ServingIssuer, hosts []string) Issuer {
	return servingIssuer{Issuer: iss, serving: s, hosts: hosts}
}

type servingIssuer struct {
	Issuer
	serving ServingIssuer
	hosts   []string
}

func (i servingIssuer) Issue(ctx context.Context, service string) (Certificate, error) {
	if service == names.ControlPlane {
		return i.serving.IssueServing(ctx, i.hosts)
	}
	return i.Issuer.Issue(ctx, service)
}

// ServingTLS is server TLS configuration that presents m's current
// certificate of names.ControlPlane, which the caller holds (Acquire): a
// renewed certificate is served from the next handshake on, without a
// restart. Each call returns a configuration of its own, for one listener.
func (m *Manager) ServingTLS() *tls.Config {
	var (
		mu     sync.Mutex
		serial string
		pair   *tls.Certificate
	)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, ok := m.Current(names.ControlPlane)
			if !ok {
				return nil, errors.New("meshd's serving certificate is not issued (yet); see /readyz and /debug/secrets")
			}
			mu.Lock()
			defer mu.Unlock()
			if c.Serial != serial {
				p, err := c.TLSCertificate()
				if err != nil {
					return nil, err
				}
				serial, pair = c.Serial, &p
			}
			return pair, nil
		},
	}
}
