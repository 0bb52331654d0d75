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

// Certificates is what secret discovery needs from the certificate manager,
// which keeps the one count of the streams holding each identity.
type Certificates interface {
	// Acquire takes one reference to service's identity whatever the
	// outcome (see secrets.Manager.Acquire), and returns it if it is served.
	Acquire(ctx context.Context, service string) (secrets.Certificate, error)
	// Release gives back one reference taken by Acquire.
	Release(service string)
	// Held reports whether any reference to service's identity is held.
	Held(service string) bool
	// Current returns service's identity while it may be served.
	Current(service string) (secrets.Certificate, bool)
	TrustBundle(ctx context.Context) ([]byte, error)
	OnChange(fn func(service string))
}

var _ Certificates = (*secrets.Manager)(nil)

// Secrets resolves SDS subscriptions: xspace/identity is the certificate of
// the service the stream authenticated as, published in the cache under
// that service's scope so no other stream can see it; xspace/trust-bundle
// is shared. A stream that did not authenticate gets no identity: the name
// is unknown to it and answered as not found.
//
// The certificate manager counts the streams holding an identity: every
// Acquire of an identity takes a reference there, served or not, and the
// one Release the stream owes gives it back. What the cache holds follows
// the manager, decided under mu from its state at that moment: while a
// stream holds an identity, the cache has its current certificate (pushed
// when it rotates, or when an identity that could not be issued finally
// is), or, once it expired unrenewed, a tombstone, so no stream keeps or
// receives an expired certificate; when the last stream lets go, the
// identity is forgotten.
type Secrets struct {
	certs Certificates
	pub   Publisher
	log   *slog.Logger

	// mu orders what is published for an identity with what the manager
	// says about it.
	mu sync.Mutex
}

// NewSecrets returns secret discovery over a certificate manager.
func NewSecrets(certs Certificates, pub Publisher, logger *slog.Logger) *Secrets {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Secrets{certs: certs, pub: pub, log: logger.With("component", "sds")}
	certs.OnChange(s.changed)
	return s
}

// Acquire makes secret name ready for a stream of service ("" when the
// stream did not authenticate). found says the name is one the stream may
// see; held that it holds a reference, given back with one Release (an
// identity only). An identity that cannot be issued now is still held: it
// is published as soon as the manager's retries issue it.
func (s *Secrets) Acquire(ctx context.Context, service, name string) (found, held bool) {
	switch name {
	case names.IdentitySecret:
		// The control plane's own certificate (names.Reserved) is never
		// an identity a stream may hold: no token names it, and this
		// keeps it so should one ever.
		if names.ValidateVIP(service) != nil || names.Reserved(service) {
			return false, false
		}
		if _, err := s.certs.Acquire(ctx, service); err != nil {
			s.log.Warn("no identity certificate yet; retrying until it is issued or the proxy lets go",
				"service", service, "error", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.syncIdentity(service)
		return true, true
	case names.TrustBundleSecret:
		s.publishBundle(ctx)
		return true, false
	}
	return false, false
}

// Release undoes one Acquire that held; the identity of a service no stream
// holds is dropped from the cache (and, in the manager, from renewal).
func (s *Secrets) Release(service, name string) {
	if name != names.IdentitySecret || names.ValidateVIP(service) != nil || names.Reserved(service) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs.Release(service)
	s.syncIdentity(service)
}

// changed republishes a rotated, newly issued or expired identity, or the
// trust bundle ("").
func (s *Secrets) changed(service string) {
	switch {
	case service == "":
		s.publishBundle(context.Background())
		return
	case names.Reserved(service): // meshd's serving certificate: never published
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncIdentity(service)
}

// syncIdentity makes the cache hold what the manager says of service's
// identity now: nothing if no stream holds it, else its current
// certificate, or a tombstone while it has none that may be served (not
// issued yet, or expired: streams holding it drop it). Called with mu held.
func (s *Secrets) syncIdentity(service string) {
	it := cache.Item{TypeURL: resource.SecretType, Name: names.IdentitySecret, Scope: service}
	if !s.certs.Held(service) {
		s.pub.Delete(it)
		return
	}
	if cert, ok := s.certs.Current(service); ok {
		it.Msg = translate.IdentitySecret(cert.CertPEM, cert.KeyPEM)
	}
	if err := s.pub.Update(it); err != nil {
		s.log.Error("publishing identity", "service", service, "error", err)
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
