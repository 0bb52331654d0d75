// Package token issues and verifies the bearer tokens clients present to
// meshd: xDS clients in their gRPC metadata, REST clients in their HTTP
// headers (authorization: Bearer <token>). A token has a role and expires.
// A service token names one service: a stream that presents it is bound to
// that service, and only that service's identity secret is served on it;
// on the REST API it may act on that service's own instances only. An
// operator token names a person or tool: it may do anything on the REST
// API, and its xDS streams are served clusters but never an identity.
//
// Tokens are JWTs signed with HMAC-SHA256 by a key from a keyring file that
// every meshd replica reads, so replicas accept each other's tokens. The
// first key signs; every key verifies, each until its verify_until, so a
// rotated-out key keeps its tokens valid for an overlap.
package token

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/prisma-systems/xspace-mesh/names"
)

const (
	issuer   = "xspace-mesh"
	audience = "xspace-mesh-xds"
	// MaxTTL bounds a token's lifetime.
	MaxTTL = 366 * 24 * time.Hour
	// minSecret is the shortest signing key accepted, in bytes.
	minSecret = 32
)

// ErrInvalid is returned (wrapped) for a token that is malformed, forged,
// expired, or signed by a key the keyring no longer accepts.
var ErrInvalid = errors.New("invalid token")

// Key is one signing key of a keyring.
type Key struct {
	ID     string
	Secret []byte
	// VerifyUntil, when set, is when tokens signed by this key stop being
	// accepted: the end of its rotation overlap.
	VerifyUntil time.Time
}

// Keyring signs with its first key and verifies with all of them.
type Keyring struct {
	keys []Key
	now  func() time.Time
}

// NewKeyring checks the keys and returns a keyring; now is the clock (nil
// means time.Now).
func NewKeyring(keys []Key, now func() time.Time) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: keyring has no keys")
	}
	seen := map[string]bool{}
	for i, k := range keys {
		switch {
		case k.ID == "":
			return nil, fmt.Errorf("token: keys[%d]: id is empty", i)
		case seen[k.ID]:
			return nil, fmt.Errorf("token: keys[%d]: id %q appears twice", i, k.ID)
		case len(k.Secret) < minSecret:
			return nil, fmt.Errorf("token: keys[%d] (%s): secret is %d bytes, at least %d needed", i, k.ID, len(k.Secret), minSecret)
		}
		seen[k.ID] = true
	}
	if now == nil {
		now = time.Now
	}
	return &Keyring{keys: keys, now: now}, nil
}

// Role is what a token may do.
type Role string

// Roles. A token without a role claim (issued before roles existed) is a
// service token.
const (
	RoleService  Role = "service"
	RoleOperator Role = "operator"
)

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleService, RoleOperator:
		return r, nil
	}
	return "", fmt.Errorf("role %q is not a role; use service or operator", s)
}

// Claims are what a verified token says.
type Claims struct {
	Role Role
	// Subject is the service of a service token, the name of the person or
	// tool of an operator token.
	Subject string
	// Service is Subject for a service token, empty for any other.
	Service string
	Expires time.Time
	KeyID   string
}

// claims is a token's JWT body.
type claims struct {
	jwt.RegisteredClaims
	Role Role `json:"role,omitempty"`
}

// Issue returns a service token for service valid for ttl, signed by the
// first key.
func (k *Keyring) Issue(service string, ttl time.Duration) (string, error) {
	return k.IssueRole(RoleService, service, ttl)
}

// IssueRole returns a token of role for subject (a service name for a
// service token; a name of the same form for an operator) valid for ttl.
// A service token is refused for the control plane's own names
// (names.Reserved): it would give its bearer meshd's serving key.
func (k *Keyring) IssueRole(role Role, subject string, ttl time.Duration) (string, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if err := names.ValidateVIP(subject); err != nil {
		return "", fmt.Errorf("token: %s: %w", subjectField(role), err)
	}
	if role == RoleService && names.Reserved(subject) {
		return "", fmt.Errorf("token: service %q is reserved for the control plane; services may not start with %q", subject, names.ReservedPrefix)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("token: ttl %s is out of range; use a positive duration up to %s", ttl, MaxTTL)
	}
	now := k.now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    issuer,
		Audience:  jwt.ClaimStrings{audience},
		Subject:   subject,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}, Role: role})
	signer := k.keys[0]
	t.Header["kid"] = signer.ID
	s, err := t.SignedString(signer.Secret)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	return s, nil
}

// Verify checks a token's signature, expiry, issuer and audience and returns
// its claims. Every failure wraps ErrInvalid.
func (k *Keyring) Verify(s string) (Claims, error) {
	var c claims
	var used Key
	_, err := jwt.ParseWithClaims(s, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		for _, key := range k.keys {
			if key.ID != kid {
				continue
			}
			if !key.VerifyUntil.IsZero() && k.now().After(key.VerifyUntil) {
				return nil, fmt.Errorf("key %q was retired at %s", kid, key.VerifyUntil.Format(time.RFC3339))
			}
			used = key
			return key.Secret, nil
		}
		return nil, fmt.Errorf("unknown key %q", kid)
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(k.now),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c.claims(used.ID)
}

// Inspect reads what a token says without checking its signature, for
// tools that have no keyring at hand (meshctl bootstrap checks the token
// it embeds). It refuses what Verify refuses on any keyring: a malformed
// token, another issuer or audience, no expiry, a bad role or subject.
// Whether the token is expired is left to the caller. Never authorize on
// what it returns.
func Inspect(s string) (Claims, error) {
	var c claims
	t, _, err := jwt.NewParser().ParseUnverified(s, &c)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Issuer != issuer || len(c.Audience) != 1 || c.Audience[0] != audience || c.ExpiresAt == nil {
		return Claims{}, fmt.Errorf("%w: not a token of meshd's (issuer %q, audience %v)", ErrInvalid, c.Issuer, c.Audience)
	}
	kid, _ := t.Header["kid"].(string)
	return c.claims(kid)
}

// claims checks the role and subject of a parsed token and returns its
// Claims.
func (c claims) claims(keyID string) (Claims, error) {
	role := c.Role
	if role == "" {
		role = RoleService
	}
	if _, err := ParseRole(string(role)); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if names.ValidateVIP(c.Subject) != nil || role == RoleService && names.Reserved(c.Subject) {
		return Claims{}, fmt.Errorf("%w: subject %q is not a %s", ErrInvalid, c.Subject, subjectField(role))
	}
	out := Claims{Role: role, Subject: c.Subject, Expires: c.ExpiresAt.Time, KeyID: keyID}
	if role == RoleService {
		out.Service = c.Subject
	}
	return out, nil
}

// subjectField names what a role's subject is.
func subjectField(r Role) string {
	if r == RoleOperator {
		return "operator name"
	}
	return "service name"
}
