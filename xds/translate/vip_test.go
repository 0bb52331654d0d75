package translate

import (
	"slices"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// yieldNames lists a yield's resources as "type name", tombstones marked "-".
func yieldNames(y Yield) []string {
	var out []string
	for _, set := range y.Sets {
		for _, r := range set.Resources {
			mark := ""
			if r.Msg == nil {
				mark = "-"
			}
			out = append(out, mark+typeName(r.TypeURL)+" "+r.Name)
		}
	}
	return out
}

func typeName(typeURL string) string { return typeURL[strings.LastIndex(typeURL, ".")+1:] }

func TestVIPYields(t *testing.T) {
	up := []registry.Instance{{ID: "g1", VIP: "greeter", Address: "10.0.0.1", Port: 9090, Status: registry.StatusUp}}
	plaintextOff := false
	tests := []struct {
		name  string
		svc   registry.Service
		found bool
		want  []string
	}{
		{"not found", registry.Service{}, false, []string{
			"Listener greeter", "Listener greeter.vip", "RouteConfiguration greeter.vip",
			"-Cluster greeter.vip", "-ClusterLoadAssignment greeter.vip",
			"-Cluster greeter.svip", "-ClusterLoadAssignment greeter.svip",
		}},
		{"grpc", registry.Service{VIP: registry.VIP{Name: "greeter", Policy: registry.Policy{Protocol: registry.GRPC}}, Instances: up}, true, []string{
			"Cluster greeter.svip", "ClusterLoadAssignment greeter.svip",
			"Listener greeter", "Listener greeter.vip", "RouteConfiguration greeter.vip",
			"Cluster greeter.vip", "ClusterLoadAssignment greeter.vip",
		}},
		{"mutual TLS only", registry.Service{VIP: registry.VIP{Name: "greeter", Policy: registry.Policy{Plaintext: &plaintextOff}}, Instances: up}, true, []string{
			"Cluster greeter.svip", "ClusterLoadAssignment greeter.svip",
			"Listener greeter", "Listener greeter.vip", "RouteConfiguration greeter.vip",
			"-Cluster greeter.vip", "-ClusterLoadAssignment greeter.vip",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := VIP("greeter", tt.svc, tt.found)
			if got := yieldNames(y); !slices.Equal(got, tt.want) {
				t.Fatalf("yields %q\nwant   %q", got, tt.want)
			}
			// Every name it yields is one it owns, so forgetting it
			// leaves nothing behind.
			var owned []string
			for _, r := range Owned("greeter") {
				owned = append(owned, typeName(r.TypeURL)+" "+r.Name)
			}
			for _, n := range yieldNames(y) {
				if !slices.Contains(owned, strings.TrimPrefix(n, "-")) {
					t.Errorf("%s is yielded but not owned", n)
				}
			}
		})
	}
}

// TestVIPSetThatDoesNotValidate: a pair that does not validate is not
// published (its previous resources stay), and says why; the VIP's other
// set is.
func TestVIPSetThatDoesNotValidate(t *testing.T) {
	bad := registry.Service{VIP: registry.VIP{Name: "payments"}, Instances: []registry.Instance{
		{ID: "p1", VIP: "payments", Address: "", Port: 8080, SecurePort: 8443, Status: registry.StatusUp}, // no address
	}}
	y := VIP("payments", bad, true)
	if len(y.Sets) != 2 {
		t.Fatalf("%d sets, want the secure and the plaintext one", len(y.Sets))
	}
	for i, set := range y.Sets {
		if set.Err == nil || len(set.Resources) != 0 {
			t.Errorf("set %d: error %v, %d resources; want an error and nothing", i, set.Err, len(set.Resources))
		}
	}
	good := VIP("payments", registry.Service{VIP: registry.VIP{Name: "payments"}}, true)
	for _, set := range good.Sets {
		if set.Err != nil {
			t.Fatalf("a VIP without instances: %v", set.Err)
		}
	}
	if got := yieldNames(good); !slices.Contains(got, "Cluster payments.vip") || !slices.Contains(got, "RouteConfiguration payments.vip") {
		t.Fatalf("yields %q", got)
	}
}
