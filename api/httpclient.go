package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// ClientOptions are how a REST client reaches and authenticates to meshd.
type ClientOptions struct {
	// CAFile is a PEM bundle that validates meshd's serving certificate
	// (the embedded CA's <data_dir>/ca/ca.crt, or Vault's CA); empty: the
	// system's roots.
	CAFile string
	// Token is sent as "Authorization: Bearer <token>" with every request;
	// empty: none.
	Token string
}

// HTTPClient returns an HTTP client for NewClient that trusts o.CAFile and
// presents o.Token.
func HTTPClient(o ClientOptions) (*http.Client, error) {
	if strings.ContainsAny(o.Token, " \t\r\n") {
		return nil, errors.New("api: the token contains white space; pass the output of meshctl token issue as is")
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("api: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("api: CA file %s holds no PEM certificate", o.CAFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = t
	if o.Token != "" {
		rt = bearer{token: o.Token, next: t}
	}
	return &http.Client{Transport: rt}, nil
}

// bearer adds a bearer token to requests that carry no Authorization.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
