package token

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/prisma-systems/xspace-mesh/names"
)

var (
	t0      = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	secretA = []byte(strings.Repeat("a", 32))
	secretB = []byte(strings.Repeat("b", 32))
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func keyring(t *testing.T, now time.Time, keys ...Key) *Keyring {
	t.Helper()
	kr, err := NewKeyring(keys, at(now))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestIssueAndVerify(t *testing.T) {
	kr := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	tok, err := kr.Issue("payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kr.Verify(tok)
	if err != nil || c.Service != "payments" || c.KeyID != "k1" || !c.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	// Another replica with the same key accepts it.
	if _, err := keyring(t, t0, Key{ID: "k1", Secret: secretA}).Verify(tok); err != nil {
		t.Fatalf("replica refused a token of the shared key: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	kr := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	good, _ := kr.Issue("payments", time.Hour)
	forged, _ := keyring(t, t0, Key{ID: "k1", Secret: secretB}).Issue("payments", time.Hour)
	otherKid, _ := keyring(t, t0, Key{ID: "k9", Secret: secretA}).Issue("payments", time.Hour)
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "payments", "billings", 1))) + "." + parts[2]
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Subject: "payments", Issuer: issuer,
		Audience: jwt.ClaimStrings{audience}, ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour)),
	})
	none.Header["kid"] = "k1"
	unsigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	tests := map[string]struct {
		tok string
		kr  *Keyring
	}{
		"forged":           {forged, kr},
		"tampered payload": {tampered, kr},
		"unknown key":      {otherKid, kr},
		"alg none":         {unsigned, kr},
		"expired":          {good, keyring(t, t0.Add(2*time.Hour), Key{ID: "k1", Secret: secretA})},
		"unknown role":     {signed(t, secretA, claims{RegisteredClaims: registered("payments"), Role: "admin"}), kr},
		"reserved service": {signed(t, secretA, claims{RegisteredClaims: registered(names.ControlPlane)}), kr},
		"garbage":          {"not.a.token", kr},
		"empty":            {"", kr},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if c, err := tt.kr.Verify(tt.tok); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalid", c, err)
			}
		})
	}
}

// registered are the standard claims of a token for subject, valid at t0.
func registered(subject string) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Subject: subject, Issuer: issuer, Audience: jwt.ClaimStrings{audience},
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour)),
	}
}

// signed signs c with secret under key id k1, as a keyring would.
func signed(t *testing.T, secret []byte, c claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRoles: an operator token says so and names no service; a token
// without a role claim is a service token; an operator may be named like
// the control plane, a service may not.
func TestRoles(t *testing.T) {
	kr := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	op, err := kr.IssueRole(RoleOperator, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := kr.Verify(op); err != nil || c.Role != RoleOperator || c.Subject != "alice" || c.Service != "" {
		t.Fatalf("operator token verified as %+v, %v", c, err)
	}
	legacy := signed(t, secretA, claims{RegisteredClaims: registered("payments")})
	if c, err := kr.Verify(legacy); err != nil || c.Role != RoleService || c.Service != "payments" {
		t.Fatalf("a token without a role verified as %+v, %v; want a service token of payments", c, err)
	}
	if _, err := kr.IssueRole("admin", "alice", time.Hour); err == nil || !strings.Contains(err.Error(), "use service or operator") {
		t.Fatalf("IssueRole(admin) = %v", err)
	}
	if _, err := ParseRole("operator"); err != nil {
		t.Fatal(err)
	}
}

func TestRotationOverlap(t *testing.T) {
	old := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	oldTok, _ := old.Issue("payments", 48*time.Hour)
	rotated := []Key{{ID: "k2", Secret: secretB}, {ID: "k1", Secret: secretA, VerifyUntil: t0.Add(24 * time.Hour)}}
	during := keyring(t, t0.Add(time.Hour), rotated...)
	if _, err := during.Verify(oldTok); err != nil {
		t.Fatalf("old key's token refused during the overlap: %v", err)
	}
	newTok, _ := during.Issue("payments", time.Hour)
	if c, _ := during.Verify(newTok); c.KeyID != "k2" {
		t.Fatalf("new tokens signed by %q, want the first key k2", c.KeyID)
	}
	after := keyring(t, t0.Add(25*time.Hour), rotated...)
	if _, err := after.Verify(oldTok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("old key's token accepted after its overlap: %v", err)
	}
}

func TestIssueValidates(t *testing.T) {
	kr := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	for _, tt := range []struct {
		service string
		ttl     time.Duration
	}{{"Payments", time.Hour}, {"", time.Hour}, {"payments", 0}, {"payments", MaxTTL + time.Hour}, {names.ControlPlane, time.Hour}} {
		if _, err := kr.Issue(tt.service, tt.ttl); err == nil {
			t.Errorf("Issue(%q, %s) succeeded", tt.service, tt.ttl)
		}
	}
	if _, err := NewKeyring([]Key{{ID: "k", Secret: []byte("short")}}, nil); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	if _, err := NewKeyring([]Key{{ID: "k", Secret: secretA}, {ID: "k", Secret: secretB}}, nil); err == nil {
		t.Error("duplicate key ids were accepted")
	}
}

func TestKeyringFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "tokens.yaml")
	kr, created, err := LoadOrCreate(path, at(t0))
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = %v, created %v", err, created)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode %v, want 0600", info.Mode().Perm())
	}
	tok, _ := kr.Issue("payments", time.Hour)
	again, created, err := LoadOrCreate(path, at(t0))
	if err != nil || created {
		t.Fatalf("second LoadOrCreate = %v, created %v", err, created)
	}
	if _, err := again.Verify(tok); err != nil {
		t.Fatalf("reloaded keyring refused its own token: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable keyring was loaded: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("keys:\n  - id: a\n    secret: c2hvcnQ=\n    extra: 1\n"), 0o600)
	if _, err := Load(bad, nil); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("unknown field accepted: %v", err)
	}
}

// TestInspect: a token reads the same unverified as verified, forged or
// not; what is not a token of meshd's, or has a bad role or subject, is
// refused even unverified.
func TestInspect(t *testing.T) {
	kr := keyring(t, t0, Key{ID: "k1", Secret: secretA})
	good, _ := kr.IssueRole(RoleOperator, "alice", time.Hour)
	verified, err := kr.Verify(good)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Inspect(good); err != nil || c != verified {
		t.Fatalf("Inspect = %+v, %v; want %+v", c, err, verified)
	}
	forged, _ := keyring(t, t0, Key{ID: "k1", Secret: secretB}).Issue("payments", time.Hour)
	if c, err := Inspect(forged); err != nil || c.Service != "payments" {
		t.Fatalf("Inspect(forged) = %+v, %v; it reads without verifying", c, err)
	}
	noExpiry := registered("payments")
	noExpiry.ExpiresAt = nil
	otherAudience := registered("payments")
	otherAudience.Audience = jwt.ClaimStrings{"someone-else"}
	for name, tok := range map[string]string{
		"garbage":          "not.a.token",
		"empty":            "",
		"no expiry":        signed(t, secretA, claims{RegisteredClaims: noExpiry}),
		"other audience":   signed(t, secretA, claims{RegisteredClaims: otherAudience}),
		"unknown role":     signed(t, secretA, claims{RegisteredClaims: registered("payments"), Role: "admin"}),
		"reserved service": signed(t, secretA, claims{RegisteredClaims: registered(names.ControlPlane)}),
	} {
		if c, err := Inspect(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Inspect = %+v, %v; want ErrInvalid", name, c, err)
		}
	}
}
