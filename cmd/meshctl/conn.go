package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/token"
)

// Environment variables of the connection flags.
const (
	tokenEnv   = "MESHCTL_TOKEN"
	caFileEnv  = "MESHCTL_CA_FILE"
	dataDirEnv = "MESHCTL_DATA_DIR"
	// defaultDataDir is meshd's data_dir default, relative to where it
	// runs: meshctl run next to a local meshd finds its CA there.
	defaultDataDir = "data"
)

// conn is how meshctl reaches meshd: the trust bundle of an https server
// and the bearer token, resolved once per invocation from the flags.
type conn struct {
	tokenFile, caFile, dataDir string
	// trust is the CA file in use ("" for the system's roots); localCA
	// says it was found in the local data directory rather than named.
	trust   string
	localCA bool
	token   string
	hc      *http.Client
	api     *api.Client
}

// connect resolves the connection flags: the token from --token-file or
// $MESHCTL_TOKEN, and, for an https server, the CA from --ca-file or, when
// the server is on this machine, from meshd's data directory.
func (a *app) connect() error {
	c := &a.conn
	switch {
	case c.tokenFile != "":
		tok, err := token.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		c.token = tok
	default:
		c.token = strings.TrimSpace(os.Getenv(tokenEnv))
	}
	u, err := url.Parse(a.server)
	if err != nil {
		return err
	}
	c.trust = c.caFile
	if c.trust == "" && u.Scheme == "https" && loopbackHost(u.Hostname()) {
		local := localCAFile(c.dataDir)
		if _, err := os.Stat(local); err == nil {
			c.trust, c.localCA = local, true
		}
	}
	hc, err := api.HTTPClient(api.ClientOptions{CAFile: c.trust, Token: c.token})
	if err != nil {
		return err
	}
	hc.Timeout = a.timeout
	c.hc, c.api = hc, api.NewClient(a.server, hc)
	return nil
}

// localCAFile is the embedded CA's certificate in a meshd data directory.
func localCAFile(dataDir string) string {
	return filepath.Join(dataDir, "ca", embedded.CertFile)
}

func (a *app) client() *api.Client { return a.conn.api }

// loopbackHost reports whether host names this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dialXDS connects to meshd's xDS address the way the REST API is reached:
// TLS with the same trust bundle when the server is https, the token on
// every stream.
func (a *app) dialXDS(addr string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	secure := strings.HasPrefix(a.server, "https://")
	if secure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.conn.trust != "" {
			pem, err := os.ReadFile(a.conn.trust)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", a.conn.trust)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if a.conn.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds{token: a.conn.token, secure: secure}))
	}
	return grpc.NewClient(addr, opts...)
}

// bearerCreds sends the token in each stream's metadata, as sidecars do.
type bearerCreds struct {
	token  string
	secure bool
}

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false only for a plaintext meshd, which
// serves on loopback alone.
func (b bearerCreds) RequireTransportSecurity() bool { return b.secure }

// tlsHint explains a failed TLS handshake with what to pass.
func (a *app) tlsHint(err error) string {
	var unknown x509.UnknownAuthorityError
	var name x509.HostnameError
	switch {
	case errors.As(err, &unknown) && a.conn.caFile == "":
		where := "the embedded CA's <data_dir>/ca/ca.crt, or Vault's CA"
		if a.conn.localCA {
			where = "found " + a.conn.trust + ", which did not sign it; another data directory? set --data-dir"
		}
		return fmt.Sprintf("meshd's certificate is not signed by a CA meshctl trusts: pass --ca-file (%s)", where)
	case errors.As(err, &unknown):
		return fmt.Sprintf("meshd's certificate is not signed by --ca-file %s", a.conn.caFile)
	case errors.As(err, &name):
		return fmt.Sprintf("meshd's certificate does not name %s; use a name it carries (tls.names in meshd's config)", name.Host)
	}
	return ""
}
