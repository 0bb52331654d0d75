package embedded

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/prisma-systems/xspace-mesh/secrets"
)

// keyMode is the only permission ca.key may have: readable by its owner.
const keyMode fs.FileMode = 0o600

// loadOrCreateRoot loads the root from dir or, when ca.crt does not exist,
// creates a new one. ca.crt is written last (an atomic rename), so its
// presence means the root is complete: a ca.key without ca.crt is a crash
// during creation, before the root signed anything, and is replaced.
func loadOrCreateRoot(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, bool, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, err := os.Stat(certPath)
	switch {
	case err == nil:
		root, key, err := loadRoot(certPath, keyPath)
		return root, key, false, err
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, false, fmt.Errorf("embedded CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, false, fmt.Errorf("embedded CA: create directory: %w", err)
	}
	root, key, err := createRoot(certPath, keyPath, now)
	return root, key, true, err
}

func loadRoot(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	fi, err := os.Stat(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("embedded CA: %s exists but its key %s does not; restore the key, or move %s aside to create a new root",
			certPath, keyPath, certPath)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&^keyMode != 0 {
		return nil, nil, fmt.Errorf("embedded CA: %s has mode %#o; a private key must be readable by its owner only (chmod 600 %s)",
			keyPath, perm, keyPath)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: %w", err)
	}
	certs, err := secrets.ParsePEMCertificates(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: %s: %w", certPath, err)
	}
	root := certs[0]
	if !root.IsCA {
		return nil, nil, fmt.Errorf("embedded CA: %s is not a CA certificate", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, nil, fmt.Errorf("embedded CA: %s does not match %s", keyPath, certPath)
	}
	return root, key, nil
}

func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T; want an ECDSA key", k)
	}
	return key, nil
}

func createRoot(certPath, keyPath string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: root serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootCommonName, Organization: []string{"xspace-mesh"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: sign root: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: parse root: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded CA: root key: %w", err)
	}
	if err := writeFileAtomic(keyPath, keyPEM, keyMode); err != nil {
		return nil, nil, fmt.Errorf("embedded CA: write root key: %w", err)
	}
	if err := writeFileAtomic(certPath, secrets.EncodePEMCertificates(root), 0o644); err != nil {
		return nil, nil, fmt.Errorf("embedded CA: write root certificate: %w", err)
	}
	return root, key, nil
}

// writeFileAtomic writes b to path through a temporary file created with
// mode (never wider, whatever the umask), synced and renamed into place,
// then syncs the directory.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return werr
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
