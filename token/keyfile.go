package token

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// keyFile is the keyring file's format (YAML or JSON):
//
//	keys:
//	  - id: 2026-11
//	    secret: <base64 of at least 32 random bytes>
//	  - id: 2026-10
//	    secret: ...
//	    verify_until: 2026-11-29T00:00:00Z
type keyFile struct {
	Keys []struct {
		ID          string    `json:"id"`
		Secret      string    `json:"secret"`
		VerifyUntil time.Time `json:"verify_until,omitzero"`
	} `json:"keys"`
}

// Load reads a keyring file. It must not be readable by others (mode 0600
// or stricter): it holds the keys that mint identities.
func Load(path string, now func() time.Time) (*Keyring, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("token: keyring: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("token: keyring %s has mode %v; it holds signing keys, chmod 600 it", path, info.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: keyring: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, fmt.Errorf("token: keyring %s: %w", path, err)
	}
	var f keyFile
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("token: keyring %s: %w", path, err)
	}
	keys := make([]Key, 0, len(f.Keys))
	for i, k := range f.Keys {
		secret, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("token: keyring %s: keys[%d].secret is not base64: %w", path, i, err)
		}
		keys = append(keys, Key{ID: k.ID, Secret: secret, VerifyUntil: k.VerifyUntil})
	}
	kr, err := NewKeyring(keys, now)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return kr, nil
}

// LoadOrCreate loads the keyring at path, creating it with one random key
// (mode 0600) when it does not exist: a single meshd works with no setup.
// Replicas must share one file instead.
func LoadOrCreate(path string, now func() time.Time) (*Keyring, bool, error) {
	kr, err := Load(path, now)
	if !errors.Is(err, fs.ErrNotExist) {
		return kr, false, err
	}
	secret := make([]byte, minSecret)
	if _, err := rand.Read(secret); err != nil {
		return nil, false, fmt.Errorf("token: generate key: %w", err)
	}
	id := "k-" + time.Now().UTC().Format("20060102-150405")
	doc := fmt.Sprintf("keys:\n  - id: %s\n    secret: %s\n", id, base64.StdEncoding.EncodeToString(secret))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("token: create keyring: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("token: create keyring: %w", err)
	}
	if _, err := f.WriteString(doc); err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("token: write keyring: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("token: write keyring: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("token: write keyring: %w", err)
	}
	kr, err = Load(path, now)
	return kr, true, err
}

// ReadFile reads a token file written from meshctl token issue's output:
// the token, white space around it trimmed. An empty file is an error.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token: %w (write one with: meshctl token issue --service NAME > FILE)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token: %s is empty; write one with: meshctl token issue --service NAME > %s", path, path)
	}
	return tok, nil
}
