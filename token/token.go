// Package token issues and verifies the bearer tokens xDS clients present
// in their gRPC metadata (authorization: Bearer <token>). A token names one
// service and expires; a stream that presents it is bound to that service,
// and only that service's identity secret is served on it.
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

// Claims are what a verified token says.
type Claims struct {
	Service string
	Expires time.Time
	KeyID   string
}

// Issue returns a token for service valid for ttl, signed by the first key.
func (k *Keyring) Issue(service string, ttl time.Duration) (string, error) {
	if err := names.ValidateVIP(service); err != nil {
		return "", fmt.Errorf("token: service: %w", err)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("token: ttl %s is out of range; use a positive duration up to %s", ttl, MaxTTL)
	}
	now := k.now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer:    issuer,
		Audience:  jwt.ClaimStrings{audience},
		Subject:   service,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
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
	var claims jwt.RegisteredClaims
	var used Key
	_, err := jwt.ParseWithClaims(s, &claims, func(t *jwt.Token) (any, error) {
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
	if names.ValidateVIP(claims.Subject) != nil {
		return Claims{}, fmt.Errorf("%w: subject %q is not a service name", ErrInvalid, claims.Subject)
	}
	return Claims{Service: claims.Subject, Expires: claims.ExpiresAt.Time, KeyID: used.ID}, nil
}
