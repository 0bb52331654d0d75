package e2e

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
)

// pinnedEnvoy reads the Envoy image the suite runs from .env, the one place
// it is pinned, and returns it with its version ("1.37.11").
func pinnedEnvoy(t *testing.T) (image, version string) {
	t.Helper()
	f, err := os.Open(".env")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ENVOY_IMAGE="); ok {
			m := regexp.MustCompile(`^envoyproxy/envoy:v(\d+\.\d+\.\d+)$`).FindStringSubmatch(v)
			if m == nil {
				t.Fatalf(".env: ENVOY_IMAGE=%s is not a pinned envoyproxy/envoy:vX.Y.Z", v)
			}
			return v, m[1]
		}
	}
	t.Fatal(".env sets no ENVOY_IMAGE")
	return "", ""
}

// envoyVersion finds the release in `envoy --version` output, e.g.
// "envoy  version: 5afe.../1.37.2/Clean/RELEASE/BoringSSL".
func envoyVersion(out string) (string, error) {
	m := regexp.MustCompile(`/(\d+\.\d+\.\d+)(?:-[a-z]+)?/`).FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %q", strings.TrimSpace(out))
	}
	return m[1], nil
}

// olderThan reports whether release a is older than b (both "X.Y.Z").
func olderThan(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range 3 {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}

// TestEnvoyVersionContract: the release the suite pins is supported (at
// least bootstrap.MinEnvoyVersion) and on the 1.37 line, the compose file
// takes it from .env, and both READMEs quote the pin and the minimum.
func TestEnvoyVersionContract(t *testing.T) {
	image, version := pinnedEnvoy(t)
	if olderThan(version, bootstrap.MinEnvoyVersion) || !strings.HasPrefix(version, "1.37.") {
		t.Errorf(".env pins Envoy %s; want a 1.37 release, at least %s", version, bootstrap.MinEnvoyVersion)
	}
	compose, err := os.ReadFile("docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(compose), "image: ${ENVOY_IMAGE") || strings.Contains(string(compose), "envoyproxy/envoy:v") {
		t.Error("docker-compose.yaml must take the Envoy image from ${ENVOY_IMAGE} (e2e/.env) and pin nothing itself")
	}
	minor := strings.Join(strings.Split(bootstrap.MinEnvoyVersion, ".")[:2], ".")
	for _, path := range []string{"../README.md", "../envoy-configs/README.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{image, "Envoy >= " + minor} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s does not say %q; the version contract is in e2e/.env and bootstrap.MinEnvoyVersion", path, want)
			}
		}
		for _, stale := range []string{"1.27 or later", ">= 1.27", ">= 1.31", "v1.34.0"} {
			if strings.Contains(string(b), stale) {
				t.Errorf("%s still says %q", path, stale)
			}
		}
	}
}

func TestEnvoyVersionParsing(t *testing.T) {
	for out, want := range map[string]string{
		"envoy  version: 5afe27fb/1.37.2/Clean/RELEASE/BoringSSL": "1.37.2",
		"envoy  version: abc/1.38.0-dev/Modified/DEBUG/BoringSSL": "1.38.0",
	} {
		if got, err := envoyVersion(out); err != nil || got != want {
			t.Errorf("envoyVersion(%q) = %q, %v; want %q", out, got, err, want)
		}
	}
	if _, err := envoyVersion("command not found"); err == nil {
		t.Error("a version was found in garbage")
	}
	for _, tt := range []struct {
		a, b string
		want bool
	}{{"1.35.9", "1.36.0", true}, {"1.36.0", "1.36.0", false}, {"1.37.11", "1.36.0", false}, {"1.9.0", "1.36.0", true}} {
		if got := olderThan(tt.a, tt.b); got != tt.want {
			t.Errorf("olderThan(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}
