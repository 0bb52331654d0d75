// Package deploy holds what runs meshd in production: a systemd unit, a
// container image, a production config, Prometheus alert rules and a
// Grafana dashboard (docs/production.md). Its tests check each as far as
// this machine can without systemd running, Docker, Prometheus or Grafana.
package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/config"
	"github.com/prisma-systems/xspace-mesh/internal/readme"
)

// installedConfig is where the unit and the image install deploy/meshd.yaml.
const installedConfig = "/etc/xspace-mesh/meshd.yaml"

// meshd builds meshd into a temporary directory.
func meshd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/meshd").CombinedOutput(); err != nil {
		t.Fatalf("build meshd: %v\n%s", err, out)
	}
	return bin
}

// runsAs checks that meshd accepts args (the installed config path read
// as deploy/meshd.yaml) and starts from that config, by asking it to print
// the configuration it would run.
func runsAs(t *testing.T, bin string, args []string) config.Config {
	t.Helper()
	cfgPath, err := filepath.Abs("meshd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	args = slices.Clone(args)
	if i := slices.Index(args, installedConfig); i >= 0 {
		args[i] = cfgPath
	} else {
		t.Fatalf("%v does not read %s", args, installedConfig)
	}
	out, err := exec.Command(bin, append(args, "--print-config")...).CombinedOutput()
	if err != nil {
		t.Fatalf("meshd %v: %v\n%s", args, err, out)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("deploy/meshd.yaml: %v", err)
	}
	return cfg
}

// TestProductionConfig: the shipped config is the secure configuration.
func TestProductionConfig(t *testing.T) {
	cfg := runsAs(t, meshd(t), []string{"--config", installedConfig})
	if !cfg.TLS.Enabled || cfg.XDS.AllowUnauthenticated || cfg.HTTP.AllowUnauthenticated || cfg.InsecureOnPurpose {
		t.Errorf("deploy/meshd.yaml: TLS %v, allow_unauthenticated xds %v http %v, insecure_on_purpose %v; want TLS and tokens",
			cfg.TLS.Enabled, cfg.XDS.AllowUnauthenticated, cfg.HTTP.AllowUnauthenticated, cfg.InsecureOnPurpose)
	}
}

// TestSystemdUnit: meshd accepts the unit's command line, the unit's state
// directory is the config's data_dir, and systemd's own verifier (where
// installed) finds nothing to say about the unit.
func TestSystemdUnit(t *testing.T) {
	bin := meshd(t)
	unit, err := os.ReadFile(filepath.Join("systemd", "meshd.service"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(unit)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = v
		}
	}
	start := strings.Fields(keys["ExecStart"])
	if len(start) == 0 || start[0] != "/usr/local/bin/meshd" {
		t.Fatalf("ExecStart=%s; want /usr/local/bin/meshd ...", keys["ExecStart"])
	}
	cfg := runsAs(t, bin, start[1:])
	if want := "/var/lib/" + keys["StateDirectory"]; cfg.DataDir != want {
		t.Errorf("data_dir %s, but the unit's state directory is %s", cfg.DataDir, want)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed; the unit was not verified by systemd")
		return
	}
	local := filepath.Join(t.TempDir(), "meshd.service")
	if err := os.WriteFile(local, []byte(strings.Replace(string(unit), "ExecStart=/usr/local/bin/meshd", "ExecStart="+bin, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", local).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestContainerImage: what the Dockerfile copies exists, it builds
// packages that exist, meshd accepts its entrypoint and command, and the
// volume and ports are the config's. No Docker runs here to build it.
func TestContainerImage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("container", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var entrypoint, cmd []string
	var volume, user string
	var exposed []string
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "COPY":
			if strings.HasPrefix(f[1], "--from=") {
				continue
			}
			for _, src := range f[1 : len(f)-1] {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("COPY %s: %v", src, err)
				}
			}
		case "RUN":
			for _, m := range regexp.MustCompile(`go build .*? (\./cmd/\w+)`).FindAllStringSubmatch(line, -1) {
				if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
					t.Errorf("builds %s: %v", m[1], err)
				}
			}
		case "ENTRYPOINT":
			entrypoint = jsonArray(t, line[len("ENTRYPOINT"):])
		case "CMD":
			cmd = jsonArray(t, line[len("CMD"):])
		case "VOLUME":
			volume = f[1]
		case "EXPOSE":
			exposed = f[1:]
		case "USER":
			user = f[1]
		}
	}
	if len(entrypoint) != 1 || entrypoint[0] != "/usr/local/bin/meshd" {
		t.Fatalf("ENTRYPOINT %v; want [/usr/local/bin/meshd]", entrypoint)
	}
	cfg := runsAs(t, meshd(t), cmd)
	if volume != cfg.DataDir {
		t.Errorf("VOLUME %s; the config's data_dir is %s", volume, cfg.DataDir)
	}
	for _, addr := range []string{cfg.XDS.Address, cfg.HTTP.Address} {
		if _, port, _ := strings.Cut(addr, ":"); !slices.Contains(exposed, port) {
			t.Errorf("EXPOSE %v lacks the port of %s", exposed, addr)
		}
	}
	if user == "" || user == "root" || user == "0" {
		t.Errorf("USER %q; meshd needs no root", user)
	}
}

func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &a); err != nil {
		t.Fatalf("%s: not an exec-form array: %v", s, err)
	}
	return a
}

// TestMonitoring checks the alert rules and the dashboard with
// Prometheus' rule and PromQL parsers and Grafana's dashboard schema
// (tools/monitoring, a module of its own), against the metrics the README
// lists: each metric they name must be one of those. A rule naming a
// metric meshd does not export is refused.
func TestMonitoring(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "metrics.txt")
	names, err := readme.Metrics(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	names = append(names, "up") // Prometheus' own, per scrape target
	if err := os.WriteFile(metrics, []byte(strings.Join(names, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(rules string) (string, error) {
		rules, err := filepath.Abs(rules)
		if err != nil {
			t.Fatal(err)
		}
		dash, err := filepath.Abs(filepath.Join("grafana", "meshd.json"))
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command("go", "run", ".", "-rules", rules, "-dashboard", dash, "-metrics", metrics)
		c.Dir = filepath.Join("..", "tools", "monitoring")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	rules := filepath.Join("prometheus", "alerts.yaml")
	if out, err := check(rules); err != nil {
		t.Fatalf("%v\n%s", err, out)
	} else {
		t.Log(strings.TrimSpace(out))
	}

	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(wrong, []byte(strings.Replace(string(b), "xspace_registry_self_preservation", "xspace_registry_selfpreservation", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := check(wrong); err == nil || !strings.Contains(out, "xspace_registry_selfpreservation, which meshd does not export") {
		t.Errorf("a rule naming a metric meshd does not export: %v\n%s", err, out)
	}
}
