package main

import (
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/internal/readme"
)

// TestMetricsListedInREADME: what meshd's /metrics exports the moment it
// serves (before any proxy, lookup, NACK or renewal) is exactly the
// README's metric list, so that every metric exists at zero for rates and
// alerts, and every one is documented. Consul's own metrics are listed in
// the README's Consul section and exported only with that registry.
func TestMetricsListedInREADME(t *testing.T) {
	meshdBin, _ := binaries(t)
	p := startMeshd(t, meshdBin, t.TempDir())
	resp, err := http.Get(p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	var exported []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (xspace_[a-z0-9_]+) `).FindAllStringSubmatch(string(b), -1) {
		exported = append(exported, m[1])
	}
	listed, err := readme.Metrics("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range exported {
		if !slices.Contains(listed, name) {
			t.Errorf("meshd exports %s, which the README's Metrics table does not list", name)
		}
	}
	for _, name := range listed {
		if !slices.Contains(exported, name) {
			t.Errorf("the README lists %s, which meshd does not export at start", name)
		}
	}
	if !strings.Contains(string(b), `xspace_xds_nacks_total{type="cds"} 0`) {
		t.Error("xspace_xds_nacks_total{type=\"cds\"} is not exported at zero before the first NACK")
	}
}

// TestVersion: --version prints the build, as stamped with -ldflags by the
// Makefile, and exits 0 without starting anything.
func TestVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "meshd")
	ldflags := "-X github.com/prisma-systems/xspace-mesh/internal/buildinfo.version=v1.2.3 -X github.com/prisma-systems/xspace-mesh/internal/buildinfo.revision=abc1234"
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "meshd v1.2.3 (revision abc1234, go1.") {
		t.Fatalf("meshd --version: %q, %v", out, err)
	}
}
