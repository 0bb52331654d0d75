package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForeignHostIsRefused: a request whose Host is not one of meshd's
// names (what a web page driving the API through DNS rebinding sends) is
// refused with a JSON 403 and changes nothing; meshd's own address and the
// names in http.allowed_hosts are served.
func TestForeignHostIsRefused(t *testing.T) {
	meshdBin, _ := binaries(t)
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(cfg, []byte("http:\n  allowed_hosts: [meshd.internal]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startMeshd(t, meshdBin, t.TempDir(), "--config", cfg)
	base := "http://" + strings.TrimPrefix(p.http, "http://")
	put := func(host, id string) *http.Response {
		t.Helper()
		body := `{"address":"10.6.6.6","port":8080}`
		req, err := http.NewRequest(http.MethodPut, base+"/v1/vips/payments/instances/"+id, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}

	resp := put("attacker.example:18080", "evil")
	var body struct {
		Error struct{ Code, Message, Field string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || body.Error.Code != "forbidden" ||
		!strings.Contains(body.Error.Message, "http.allowed_hosts") || body.Error.Field != "Host" {
		t.Fatalf("foreign Host: %s %+v; want 403 forbidden naming http.allowed_hosts", resp.Status, body.Error)
	}
	for _, host := range []string{strings.TrimPrefix(base, "http://"), "meshd.internal", "MESHD.internal.:18080"} {
		if resp := put(host, "ok"); resp.StatusCode/100 != 2 {
			t.Fatalf("Host %q: %s, want it served", host, resp.Status)
		}
	}
	// The refused request stored nothing: only the accepted instance exists.
	list, err := http.Get(base + "/v1/vips/payments/instances")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = list.Body.Close() }()
	var got struct{ Instances []struct{ ID string } }
	if err := json.NewDecoder(list.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.Instances) != 1 || got.Instances[0].ID != "ok" {
		t.Fatalf("instances after a refused request: %+v, want only ok", got.Instances)
	}
}
