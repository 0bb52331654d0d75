package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/secrets"
	embeddedca "github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/secrets/vault"
)

// Secrets selects and configures the certificate source of the mesh's
// identities (section "secrets").
type Secrets struct {
	// Type is embedded (a CA in the data directory) or vault (Vault PKI).
	Type string `json:"type"`
	// RenewAt is the share of a certificate's lifetime after which it is
	// renewed, e.g. 0.5.
	RenewAt float64 `json:"renew_at"`
	// NearExpiry is how close to expiry a served certificate degrades
	// /readyz; 0 means a tenth of its lifetime.
	NearExpiry registry.Duration `json:"near_expiry"`
	// MinBackoff and MaxBackoff bound the retries of a failed renewal.
	MinBackoff registry.Duration `json:"min_backoff"`
	MaxBackoff registry.Duration `json:"max_backoff"`
	Embedded   EmbeddedCA        `json:"embedded"`
	Vault      Vault             `json:"vault"`
}

// EmbeddedCA configures the embedded CA (secrets.type: embedded).
type EmbeddedCA struct {
	// Dir holds ca.crt and ca.key; empty means <data_dir>/ca.
	Dir string `json:"dir"`
	// Lifetime of issued certificates.
	Lifetime registry.Duration `json:"lifetime"`
}

// Vault configures Vault PKI (secrets.type: vault).
type Vault struct {
	// Address of Vault: http(s)://host:port.
	Address string `json:"address"`
	// Mount is the PKI secrets engine's path.
	Mount string `json:"mount"`
	// Role is the PKI role certificates are issued under.
	Role string `json:"role"`
	// ServerRole is the PKI role meshd's own serving certificate is issued
	// under when tls.enabled: it must allow tls.names (DNS and IP SANs) and
	// the URI SAN spiffe://xspace/svc/xspace-meshd.
	ServerRole string `json:"server_role"`
	// TTL requested per certificate; 0 leaves it to the role.
	TTL registry.Duration `json:"ttl"`
	// Auth is token or approle.
	Auth string `json:"auth"`
	// Token authenticates with auth: token; printed redacted. Prefer
	// token_file.
	Token Secret `json:"token"`
	// TokenFile holds the token, read at start.
	TokenFile string  `json:"token_file"`
	AppRole   AppRole `json:"approle"`
	// CACert is a PEM file verifying Vault's HTTPS certificate.
	CACert string `json:"ca_cert"`
	// Timeout bounds each request to Vault.
	Timeout registry.Duration `json:"timeout"`
}

// AppRole are Vault AppRole credentials (secrets.vault.auth: approle).
type AppRole struct {
	// Mount is the AppRole auth method's path.
	Mount  string `json:"mount"`
	RoleID string `json:"role_id"`
	// SecretID is printed redacted. Prefer secret_id_file.
	SecretID Secret `json:"secret_id"`
	// SecretIDFile holds the secret ID, read at start.
	SecretIDFile string `json:"secret_id_file"`
}

// DefaultSecrets returns the secrets section meshd runs with when given
// none: the embedded CA, 24-hour certificates renewed at half-life.
func DefaultSecrets() Secrets {
	return Secrets{
		Type:       "embedded",
		RenewAt:    secrets.DefaultRenewAt,
		MinBackoff: registry.Duration(secrets.DefaultMinBackoff),
		MaxBackoff: registry.Duration(secrets.DefaultMaxBackoff),
		Embedded:   EmbeddedCA{Lifetime: registry.Duration(embeddedca.DefaultLifetime)},
		Vault: Vault{
			Address: "http://127.0.0.1:8200",
			Mount:   vault.DefaultMount,
			Auth:    "token",
			AppRole: AppRole{Mount: vault.DefaultAppRoleMount},
			Timeout: registry.Duration(vault.DefaultTimeout),
		},
	}
}

// ResolveToken returns the Vault token, read from token_file when it is set.
func (v Vault) ResolveToken() (string, error) {
	return resolveSecret("secrets.vault.token_file", v.Token, v.TokenFile)
}

// ResolveSecretID returns the AppRole secret ID, read from secret_id_file
// when it is set.
func (a AppRole) ResolveSecretID() (string, error) {
	return resolveSecret("secrets.vault.approle.secret_id_file", a.SecretID, a.SecretIDFile)
}

func resolveSecret(field string, value Secret, file string) (string, error) {
	if file == "" {
		return string(value), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// validate checks the section; the vault subsection only when selected.
func (s Secrets) validate() error {
	var errs []error
	switch s.Type {
	case "embedded", "vault":
	default:
		errs = append(errs, fmt.Errorf("secrets.type: %q is not supported; use embedded or vault%s", s.Type, suggest(s.Type, "embedded", "vault")))
	}
	if s.RenewAt < 0.1 || s.RenewAt > 0.9 {
		errs = append(errs, fmt.Errorf("secrets.renew_at: %v is out of range; use a share of the lifetime from 0.1 to 0.9, e.g. 0.5", s.RenewAt))
	}
	if s.NearExpiry < 0 {
		errs = append(errs, fmt.Errorf("secrets.near_expiry: %s must not be negative", s.NearExpiry.D()))
	}
	if s.MinBackoff < registry.Duration(10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("secrets.min_backoff: %s is too short; use at least 10ms", s.MinBackoff.D()))
	}
	if s.MaxBackoff < s.MinBackoff {
		errs = append(errs, fmt.Errorf("secrets.max_backoff: %s is shorter than secrets.min_backoff (%s)", s.MaxBackoff.D(), s.MinBackoff.D()))
	}
	if l := s.Embedded.Lifetime; l < registry.Duration(time.Minute) || l > registry.Duration(365*24*time.Hour) {
		errs = append(errs, fmt.Errorf("secrets.embedded.lifetime: %s is out of range; use 1m to 8760h", l.D()))
	}
	if s.Type == "vault" {
		errs = append(errs, s.Vault.validate())
	}
	return errors.Join(errs...)
}

func (v Vault) validate() error {
	var errs []error
	if err := vault.CheckAddress(v.Address); err != nil {
		errs = append(errs, fmt.Errorf("secrets.vault.address: %w; e.g. https://vault.example:8200", err))
	}
	if err := validPath(v.Mount); err != nil {
		errs = append(errs, fmt.Errorf("secrets.vault.mount: %w, e.g. pki", err))
	}
	if v.Role == "" || strings.ContainsAny(v.Role, "/?# ") {
		errs = append(errs, fmt.Errorf("secrets.vault.role: %q must name the PKI role to issue from, e.g. mesh", v.Role))
	}
	if strings.ContainsAny(v.ServerRole, "/?# ") {
		errs = append(errs, fmt.Errorf("secrets.vault.server_role: %q must name a PKI role, e.g. meshd-server", v.ServerRole))
	}
	if v.TTL != 0 && v.TTL < registry.Duration(time.Second) {
		errs = append(errs, fmt.Errorf("secrets.vault.ttl: %s is too short; use at least 1s, or 0 for the role's", v.TTL.D()))
	}
	if v.Timeout < registry.Duration(100*time.Millisecond) || v.Timeout > registry.Duration(time.Minute) {
		errs = append(errs, fmt.Errorf("secrets.vault.timeout: %s is out of range; use 100ms to 1m", v.Timeout.D()))
	}
	switch v.Auth {
	case "token":
		switch {
		case v.Token != "" && v.TokenFile != "":
			errs = append(errs, errors.New("secrets.vault.token_file: set token or token_file, not both"))
		case v.Token == "" && v.TokenFile == "":
			errs = append(errs, errors.New("secrets.vault.token_file: auth is token; set token_file (or token)"))
		}
	case "approle":
		errs = append(errs, v.AppRole.validate())
	default:
		errs = append(errs, fmt.Errorf("secrets.vault.auth: %q is not supported; use token or approle%s", v.Auth, suggest(v.Auth, "token", "approle")))
	}
	return errors.Join(errs...)
}

func (a AppRole) validate() error {
	var errs []error
	if err := validPath(a.Mount); err != nil {
		errs = append(errs, fmt.Errorf("secrets.vault.approle.mount: %w, e.g. approle", err))
	}
	if a.RoleID == "" {
		errs = append(errs, errors.New("secrets.vault.approle.role_id: auth is approle; set the role ID"))
	}
	if a.SecretID != "" && a.SecretIDFile != "" {
		errs = append(errs, errors.New("secrets.vault.approle.secret_id_file: set secret_id or secret_id_file, not both"))
	}
	return errors.Join(errs...)
}

// validPath checks a Vault mount path: not empty, no leading or trailing
// '/', no empty segment, no query characters.
func validPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, "?# ") {
		return fmt.Errorf("%q must be a Vault path without leading or trailing '/'", p)
	}
	return nil
}
