package discovery

import (
	"context"
	"log/slog"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// Certificates is what secret discovery needs from the certificate manager.
type Certificates interface {
	Acquire(ctx context.Context, service string) (secrets.Certificate, error)
	Release(service string)
	Current(service string) (secrets.Certificate, bool)
	TrustBundle(ctx context.Context) ([]byte, error)
	OnChange(fn func(service string))
}

var _ Certificates = (*secrets.Manager)(nil)

// Secrets resolves SDS subscriptions: xspace/identity is the certificate of
// the service the stream authenticated as, published in the cache under
// that service's scope so no other stream can see it; xspace/trust-bundle
// is shared. A stream that did not authenticate gets no identity: the name
// is unknown to it and answered as not found. Rotations are republished to
// the streams that hold them.
type Secrets struct {
	certs Certificates
	pub   Publisher
	log   *slog.Logger

	mu   sync.Mutex
	refs map[string]int // streams holding each service's identity
}

// NewSecrets returns secret discovery over a certificate manager.
func NewSecrets(certs Certificates, pub Publisher, logger *slog.Logger) *Secrets {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Secrets{certs: certs, pub: pub, log: logger.With("component", "sds"), refs: map[string]int{}}
	certs.OnChange(s.changed)
	return s
}

// Acquire makes secret name ready for a stream of service ("" when the
// stream did not authenticate). found says the name is one the stream may
// see; held that it holds a reference, given back with one Release (an
// identity only).
func (s *Secrets) Acquire(ctx context.Context, service, name string) (found, held bool) {
	switch name {
	case names.IdentitySecret:
		if service == "" {
			return false, false
		}
		s.mu.Lock()
		s.refs[service]++
		s.mu.Unlock()
		cert, err := s.certs.Acquire(ctx, service)
		if err != nil {
			s.log.Error("no identity certificate; the proxy waits for one", "service", service, "error", err)
			return true, true
		}
		s.publishIdentity(cert)
		return true, true
	case names.TrustBundleSecret:
		s.publishBundle(ctx)
		return true, false
	}
	return false, false
}

// Release undoes one Acquire; the identity of a service no stream holds is
// dropped from the cache and from renewal.
func (s *Secrets) Release(service, name string) {
	if name != names.IdentitySecret || service == "" {
		return
	}
	s.mu.Lock()
	s.refs[service]--
	last := s.refs[service] <= 0
	if last {
		delete(s.refs, service)
	}
	s.mu.Unlock()
	s.certs.Release(service)
	if last {
		s.pub.Delete(cache.Item{TypeURL: resource.SecretType, Name: names.IdentitySecret, Scope: service})
	}
}

// changed republishes a rotated certificate, or the trust bundle ("").
func (s *Secrets) changed(service string) {
	if service == "" {
		s.publishBundle(context.Background())
		return
	}
	s.mu.Lock()
	held := s.refs[service] > 0
	s.mu.Unlock()
	if !held {
		return
	}
	if cert, ok := s.certs.Current(service); ok {
		s.publishIdentity(cert)
	}
}

func (s *Secrets) publishIdentity(cert secrets.Certificate) {
	err := s.pub.Update(cache.Item{
		TypeURL: resource.SecretType, Name: names.IdentitySecret, Scope: cert.Service,
		Msg: translate.IdentitySecret(cert),
	})
	if err != nil {
		s.log.Error("publishing identity", "service", cert.Service, "error", err)
	}
}

func (s *Secrets) publishBundle(ctx context.Context) {
	bundle, err := s.certs.TrustBundle(ctx)
	if err != nil {
		s.log.Error("no trust bundle; the proxy waits for one", "error", err)
		return
	}
	err = s.pub.Update(cache.Item{TypeURL: resource.SecretType, Name: names.TrustBundleSecret, Msg: translate.TrustBundleSecret(bundle)})
	if err != nil {
		s.log.Error("publishing trust bundle", "error", err)
	}
}
