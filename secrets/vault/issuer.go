// Package vault issues the mesh's certificates from Vault's PKI secrets
// engine: <mount>/issue/<role> with the URI SAN names.SPIFFE(service), and
// the trust bundle from the mount's CA chain. It authenticates with a token
// (renewed by Run while renewable) or with AppRole (logging in again before
// the token expires, and once more when Vault refuses a request).
package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
)

var _ secrets.Issuer = (*Issuer)(nil)

// Defaults applied by New to zero Options fields.
const (
	DefaultMount        = "pki"
	DefaultAppRoleMount = "approle"
	DefaultTimeout      = 10 * time.Second
)

// Operations, the values of the requests metric's operation label.
const (
	opIssue       = "issue"
	opTrustBundle = "trust_bundle"
)

// Options configure New.
type Options struct {
	// Address of Vault, e.g. https://vault.example:8200.
	Address string
	// Mount is the PKI secrets engine's path; default "pki".
	Mount string
	// Role is the PKI role certificates are issued under. Required.
	Role string
	// ServerRole is the PKI role meshd's own serving certificate is issued
	// under (IssueServing): it must allow the host names and addresses
	// meshd is reached by, and the URI SAN of names.ControlPlane.
	ServerRole string
	// TTL requested for each certificate; 0 leaves it to the role.
	TTL time.Duration
	// Token authenticates with a Vault token. Set Token or AppRole.
	Token string
	// AppRole authenticates with AppRole. Set Token or AppRole.
	AppRole *AppRole
	// CACert is a PEM file verifying Vault's HTTPS certificate; empty uses
	// the system's roots.
	CACert string
	// Timeout bounds each request to Vault; default 10s.
	Timeout time.Duration
	// Logger receives the issuer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the issuer's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// AppRole are the credentials of AppRole auth.
type AppRole struct {
	// Mount is the AppRole auth method's path; default "approle".
	Mount  string
	RoleID string
	// SecretID may be empty for a role that does not require one.
	SecretID string
}

// Issuer issues certificates from Vault PKI. It is safe for concurrent
// use; call Run to keep its token alive.
type Issuer struct {
	opts    Options
	client  *api.Client // carries the current token
	login   *api.Client // no token: AppRole login only
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	token   tokenState
}

// New returns an Issuer for opts. It does not contact Vault.
func New(opts Options) (*Issuer, error) {
	if opts.Mount == "" {
		opts.Mount = DefaultMount
	}
	opts.Mount = strings.Trim(opts.Mount, "/")
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	switch {
	case CheckAddress(opts.Address) != nil:
		return nil, fmt.Errorf("vault: address %w", CheckAddress(opts.Address))
	case opts.Role == "" || strings.Contains(opts.Role, "/"):
		return nil, fmt.Errorf("vault: role %q: name a PKI role of mount %s", opts.Role, opts.Mount)
	case (opts.Token == "") == (opts.AppRole == nil):
		return nil, errors.New("vault: set a token or AppRole credentials, not both")
	case opts.AppRole != nil && opts.AppRole.RoleID == "":
		return nil, errors.New("vault: AppRole needs a role_id")
	}
	if opts.AppRole != nil && opts.AppRole.Mount == "" {
		a := *opts.AppRole
		a.Mount = DefaultAppRoleMount
		opts.AppRole = &a
	}
	i := &Issuer{opts: opts, log: opts.Logger, now: opts.Now}
	if i.log == nil {
		i.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	i.log = i.log.With("component", "vault", "address", opts.Address)
	if i.now == nil {
		i.now = time.Now
	}
	var err error
	if i.client, err = newClient(opts); err != nil {
		return nil, err
	}
	if i.login, err = newClient(opts); err != nil {
		return nil, err
	}
	i.client.SetToken(opts.Token)
	if i.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("vault: metrics: %w", err)
	}
	return i, nil
}

// newClient returns a Vault client without a token, with no retries (the
// secrets.Manager retries with backoff) and ignoring VAULT_TOKEN and
// VAULT_AGENT_ADDR from the environment.
func newClient(opts Options) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault: client configuration: %w", cfg.Error)
	}
	cfg.Address, cfg.AgentAddress = opts.Address, ""
	cfg.MaxRetries, cfg.Timeout = 0, opts.Timeout
	if opts.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: opts.CACert}); err != nil {
			return nil, fmt.Errorf("vault: CA certificate %s: %w", opts.CACert, err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	c.ClearToken()
	return c, nil
}

// Issue asks Vault for a certificate of service at <mount>/issue/<role>.
func (i *Issuer) Issue(ctx context.Context, service string) (secrets.Certificate, error) {
	if err := names.ValidateVIP(service); err != nil {
		return secrets.Certificate{}, fmt.Errorf("vault: issue: %w", err)
	}
	path := i.opts.Mount + "/issue/" + i.opts.Role
	cert, err := i.issue(ctx, path, service, map[string]any{"uri_sans": names.SPIFFE(service)})
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("vault: issue %s at %s: %w%s", names.SPIFFE(service), path, err, hint(err, path, i.opts.Role))
	}
	i.log.Debug("issued certificate", "certificate", cert)
	return cert, nil
}

// IssueServing asks Vault for meshd's serving certificate at
// <mount>/issue/<server role>: the URI SAN of names.ControlPlane, and hosts
// as DNS names (alt_names) or IP addresses (ip_sans).
func (i *Issuer) IssueServing(ctx context.Context, hosts []string) (secrets.Certificate, error) {
	if i.opts.ServerRole == "" {
		return secrets.Certificate{}, errors.New("vault: no server role for meshd's serving certificate; set secrets.vault.server_role")
	}
	var dns, ips []string
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			ips = append(ips, h)
		} else {
			dns = append(dns, h)
		}
	}
	path := i.opts.Mount + "/issue/" + i.opts.ServerRole
	data := map[string]any{"uri_sans": names.SPIFFE(names.ControlPlane), "alt_names": strings.Join(dns, ","), "ip_sans": strings.Join(ips, ",")}
	if len(dns) > 0 {
		data["common_name"] = dns[0]
	}
	cert, err := i.issue(ctx, path, names.ControlPlane, data)
	if err != nil {
		return secrets.Certificate{}, fmt.Errorf("vault: issue meshd's serving certificate for %v at %s: %w%s", hosts, path, err, hint(err, path, i.opts.ServerRole))
	}
	return cert, nil
}

// issue writes data, with the configured TTL, to an issue path and counts
// the request.
func (i *Issuer) issue(ctx context.Context, path, service string, data map[string]any) (secrets.Certificate, error) {
	if i.opts.TTL > 0 {
		data["ttl"] = fmt.Sprintf("%ds", int64(i.opts.TTL.Round(time.Second)/time.Second))
	}
	s, err := i.do(ctx, func(c *api.Client) (*api.Secret, error) {
		return c.Logical().WriteWithContext(ctx, path, data)
	})
	if err == nil && (s == nil || s.Data == nil) {
		err = errors.New("empty response")
	}
	var cert secrets.Certificate
	if err == nil {
		cert, err = certificate(service, s.Data)
	}
	i.metrics.requests.WithLabelValues(opIssue, result(err)).Inc()
	return cert, err
}

// certificate builds a Certificate from an issue response: the leaf, then
// the intermediates of ca_chain (its self-signed roots are left out), with
// the whole chain as TrustPEM.
func certificate(service string, data map[string]any) (secrets.Certificate, error) {
	leaf, _ := data["certificate"].(string)
	key, _ := data["private_key"].(string)
	if leaf == "" || key == "" {
		return secrets.Certificate{}, errors.New("response has no certificate or private_key")
	}
	var chain []string
	if list, ok := data["ca_chain"].([]any); ok {
		for _, c := range list {
			if s, ok := c.(string); ok {
				chain = append(chain, s)
			}
		}
	}
	if ca, _ := data["issuing_ca"].(string); len(chain) == 0 && ca != "" {
		chain = []string{ca}
	}
	certPEM := []byte(strings.TrimSpace(leaf) + "\n")
	var trust []byte
	for _, p := range chain {
		certs, err := secrets.ParsePEMCertificates([]byte(p))
		if err != nil {
			return secrets.Certificate{}, fmt.Errorf("ca_chain: %w", err)
		}
		for _, c := range certs {
			trust = append(trust, secrets.EncodePEMCertificates(c)...)
			root := bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
			if !root {
				certPEM = append(certPEM, secrets.EncodePEMCertificates(c)...)
			}
		}
	}
	return secrets.NewCertificate(service, certPEM, []byte(strings.TrimSpace(key)+"\n"), trust)
}

// TrustBundle returns the CA chain of the PKI mount (<mount>/cert/ca_chain).
func (i *Issuer) TrustBundle(ctx context.Context) ([]byte, error) {
	path := i.opts.Mount + "/cert/ca_chain"
	s, err := i.do(ctx, func(c *api.Client) (*api.Secret, error) {
		return c.Logical().ReadWithContext(ctx, path)
	})
	var bundle []byte
	if err == nil {
		bundle, err = chainPEM(s)
	}
	i.metrics.requests.WithLabelValues(opTrustBundle, result(err)).Inc()
	if err != nil {
		return nil, fmt.Errorf("vault: trust bundle at %s: %w%s", path, err, hint(err, path, i.opts.Role))
	}
	return bundle, nil
}

// chainPEM reads the PEM chain of a cert/ca_chain response, normalised to
// one PEM block per certificate.
func chainPEM(s *api.Secret) ([]byte, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("no CA chain: the mount has no issuer (generate or import a root first)")
	}
	var raw string
	if c, ok := s.Data["ca_chain"].(string); ok && c != "" {
		raw = c
	} else if c, ok := s.Data["certificate"].(string); ok {
		raw = c
	}
	certs, err := secrets.ParsePEMCertificates([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("CA chain: %w", err)
	}
	return secrets.EncodePEMCertificates(certs...), nil
}

// CheckAddress checks Vault's address: http(s)://host:port. meshd's
// configuration and New both check with it.
func CheckAddress(addr string) error {
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not http(s)://host:port", addr)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: the port must be 1 to 65535", addr)
	}
	return nil
}
