package translate

import (
	"cmp"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/registry"
)

var update = flag.Bool("update", false, "rewrite testdata/out from testdata/in and remove stale outputs")

const (
	inDir  = "testdata/in"
	outDir = "testdata/out"
)

// goldenCase is one input model under testdata/in.
type goldenCase struct {
	name string
	svc  registry.Service
}

// loadCases reads every testdata/in/<case>.yaml, sorted by case name.
// Unknown fields are rejected so that a typo cannot silently test the defaults.
func loadCases(t testing.TB) []goldenCase {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(inDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no input cases in %s", inDir)
	}
	var cases []goldenCase
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var svc registry.Service
		if err := yaml.UnmarshalStrict(b, &svc); err != nil {
			t.Fatalf("decode %s: %v", p, err)
		}
		cases = append(cases, goldenCase{name: strings.TrimSuffix(filepath.Base(p), ".yaml"), svc: svc})
	}
	return cases
}

// goldenFiles renders what a case's VIP yields (VIP, the one entry point
// discovery publishes), keyed by file name under testdata/out: its
// resources by type, the outbound routes every sidecar gets while it is
// watched, its sidecars' inbound route for app port 8080 (InboundRoutes),
// and, when it yields tombstones, the names it says do not exist.
func goldenFiles(t *testing.T, c goldenCase) map[string][]byte {
	t.Helper()
	y := VIP(c.svc.VIP.Name, c.svc, true)
	byType := map[string][]proto.Message{}
	var absent []string
	for _, set := range y.Sets {
		if set.Err != nil {
			t.Errorf("%s: %v", c.name, set.Err)
		}
		for _, r := range set.Resources {
			if r.Msg == nil {
				absent = append(absent, r.TypeURL+" "+r.Name)
				continue
			}
			byType[r.TypeURL] = append(byType[r.TypeURL], r.Msg)
		}
	}
	byType[resource.RouteType] = append(byType[resource.RouteType], OutboundRouteConfiguration([]registry.VIP{y.OwnRoute}))
	inbound := InboundRoutes(c.svc.VIP.Name, c.svc.VIP.Policy, []uint32{8080})
	if inbound.Err != nil {
		t.Errorf("%s: %v", c.name, inbound.Err)
	}
	for _, r := range inbound.Resources {
		byType[r.TypeURL] = append(byType[r.TypeURL], r.Msg)
	}
	files := map[string][]byte{}
	for typeURL, suffix := range map[string]string{
		resource.ClusterType: "clusters", resource.EndpointType: "endpoints",
		resource.ListenerType: "listeners", resource.RouteType: "routes",
	} {
		files[c.name+"."+suffix+".yaml"] = resourcesYAML(t, byType[typeURL]...)
	}
	if len(absent) > 0 {
		slices.Sort(absent)
		b, err := yaml.Marshal(absent)
		if err != nil {
			t.Fatal(err)
		}
		files[c.name+".absent.yaml"] = b
	}
	return files
}

// TestGolden compares the translation of every input case with its expected
// YAML. Run `go test ./xds/translate -update` to rewrite the expected files,
// then read the diff: it is what Envoy will receive.
func TestGolden(t *testing.T) {
	cases := loadCases(t)
	want := map[string]bool{}
	for _, c := range cases {
		files := goldenFiles(t, c)
		for f := range files {
			want[f] = true
		}
		t.Run(c.name, func(t *testing.T) { compareGolden(t, files) })
	}
	t.Run("sidecar", func(t *testing.T) {
		files := sidecarFiles(t, cases)
		for f := range files {
			want[f] = true
		}
		compareGolden(t, files)
	})
	t.Run("unserved", func(t *testing.T) {
		// What a proxyless gRPC client is told about a VIP it is not
		// served (unknown, not grpc, or mutual TLS only): the VIP's API
		// listeners (as any case's) and a route configuration with no routes.
		files := map[string][]byte{"unserved.routes.yaml": resourcesYAML(t, UnservedRouteConfiguration("ghost"))}
		want["unserved.routes.yaml"] = true
		compareGolden(t, files)
	})
	checkStale(t, want)
}

// sidecarFiles renders what every Envoy sidecar is served: its listeners,
// and the outbound route configuration with every case's VIP in it.
func sidecarFiles(t *testing.T, cases []goldenCase) map[string][]byte {
	t.Helper()
	vips := make([]registry.VIP, 0, len(cases))
	for _, c := range cases {
		vips = append(vips, c.svc.VIP)
	}
	return map[string][]byte{
		"sidecar.listeners.yaml": resourcesYAML(t, OutboundListener(15001, DefaultODCDSTimeout), InboundListener(8443, 8080, "payments")),
		"sidecar.clusters.yaml":  resourcesYAML(t, LocalAppCluster(8080)),
		"sidecar.routes.yaml":    resourcesYAML(t, OutboundRouteConfiguration(vips)),
	}
}

// compareGolden compares rendered files with testdata/out, or rewrites them
// with -update.
func compareGolden(t *testing.T, files map[string][]byte) {
	t.Helper()
	for file, got := range files {
		path := filepath.Join(outDir, file)
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		expected, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v; run `go test ./xds/translate -update` to create it", err)
		}
		if diff := gocmp.Diff(lines(expected), lines(got)); diff != "" {
			t.Errorf("%s differs (-want +got); if intended, run `go test ./xds/translate -update`:\n%s", path, diff)
		}
	}
}

// lines splits a file for a line-by-line diff.
func lines(b []byte) []string { return strings.Split(string(b), "\n") }

// checkStale removes (with -update) or reports outputs without an input.
func checkStale(t *testing.T, want map[string]bool) {
	t.Helper()
	entries, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if want[e.Name()] {
			continue
		}
		path := filepath.Join(outDir, e.Name())
		if *update {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden file %s has no input; run `go test ./xds/translate -update` to remove it", path)
	}
}

// resourcesYAML renders resources the way a reviewer reads them: protojson
// with Envoy's field names, as a YAML list sorted by resource name.
func resourcesYAML(t *testing.T, msgs ...proto.Message) []byte {
	t.Helper()
	slices.SortFunc(msgs, func(a, b proto.Message) int { return cmp.Compare(resourceName(a), resourceName(b)) })
	list := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Errorf("%s does not validate: %v", resourceName(m), err)
			}
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %T: %v", m, err)
		}
		list = append(list, b)
	}
	j, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// resourceName is the xDS name of a resource.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case interface{ GetName() string }:
		return r.GetName()
	case interface{ GetClusterName() string }:
		return r.GetClusterName()
	default:
		return ""
	}
}
