package api_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prisma-systems/xspace-mesh/api"
)

// TestHTTPClient: a client of HTTPClient completes a TLS handshake with a
// server whose certificate chains to its CA file and sends its token; one
// without the CA file does not trust the server.
func TestHTTPClient(t *testing.T) {
	var got string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	hc, err := api.HTTPClient(api.ClientOptions{CAFile: caFile, Token: "t0k"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got != "Bearer t0k" {
		t.Errorf("Authorization = %q; want the token", got)
	}
	system, err := api.HTTPClient(api.ClientOptions{Token: "t0k"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := system.Get(srv.URL); err == nil {
		_ = resp.Body.Close()
		t.Error("a server of a CA that is not in the system's roots was trusted")
	}
	for _, o := range []api.ClientOptions{{CAFile: filepath.Join(t.TempDir(), "missing.crt")}, {CAFile: os.Args[0]}, {Token: "two words"}} {
		if _, err := api.HTTPClient(o); err == nil {
			t.Errorf("HTTPClient(%+v) accepted", o)
		}
	}
}
