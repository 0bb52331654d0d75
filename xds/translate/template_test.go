package translate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// keptTemplates is Templates as discovery keeps them, counting the
// templates it makes.
type keptTemplates struct {
	byKey map[PolicyKey]*ClusterTemplate
	made  int
}

var _ Templates = (*keptTemplates)(nil)

func (k *keptTemplates) Template(policy registry.Policy) *ClusterTemplate {
	key := KeyOf(policy)
	if t := k.byKey[key]; t != nil {
		return t
	}
	k.made++
	t := NewClusterTemplate(policy)
	k.byKey[key] = t
	return t
}

// partNames lists a yield's resources as "type name", tombstones marked
// "-".
func partNames(y Yield) []string {
	var out []string
	for _, set := range y.Sets {
		for _, r := range set.Resources {
			mark := ""
			if r.Tombstone() {
				mark = "-"
			}
			out = append(out, mark+typeName(r.TypeURL)+" "+r.Name)
		}
	}
	return out
}

// encoded is the deterministic encoding of a resource, as the cache makes
// it of a message.
func encoded(t *testing.T, r Resource) []byte {
	t.Helper()
	if r.Encoded != nil {
		return r.Encoded
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTemplatesYieldTheSameBytes: for every golden case, and every part,
// what VIPParts yields from shared templates is, byte for byte and set
// for set, what it yields by building every message, which the golden
// files show and validate; so what discovery publishes is what they show.
func TestTemplatesYieldTheSameBytes(t *testing.T) {
	kept := &keptTemplates{byKey: map[PolicyKey]*ClusterTemplate{}}
	parts := []Part{SecureClusterPart, SecureEndpointsPart, PlainClusterPart, PlainEndpointsPart, ProxylessPart, AllParts}
	for _, c := range loadCases(t) {
		for _, part := range parts {
			t.Run(fmt.Sprintf("%s/part=%d", c.name, part), func(t *testing.T) {
				built := VIPParts(c.svc.VIP.Name, c.svc, true, part, nil)
				fromTemplate := VIPParts(c.svc.VIP.Name, c.svc, true, part, kept)
				if got, want := partNames(fromTemplate), partNames(built); !slices.Equal(got, want) {
					t.Fatalf("from templates %q\nbuilt          %q", got, want)
				}
				for i, set := range built.Sets {
					tset := fromTemplate.Sets[i]
					if (set.Err == nil) != (tset.Err == nil) {
						t.Fatalf("set %d: error %v from templates, %v built", i, tset.Err, set.Err)
					}
					for j, r := range set.Resources {
						tr := tset.Resources[j]
						if tr.Independent != r.Independent || !bytes.Equal(encoded(t, tr), encoded(t, r)) {
							t.Errorf("%s %s differs from the message built for it", typeName(r.TypeURL), r.Name)
						}
					}
				}
			})
		}
	}
	if kept.made == 0 || kept.made >= len(loadCases(t)) {
		t.Errorf("%d templates for %d cases: want them shared by the cases with one policy", kept.made, len(loadCases(t)))
	}
}

// TestPolicyKeyTellsEveryFieldApart: changing any field of a normalized
// policy changes its key, so that two policies share a template only if
// they are the same policy.
func TestPolicyKeyTellsEveryFieldApart(t *testing.T) {
	ttl := registry.Duration(1)
	callers := []string{"orders"}
	base := registry.Policy{
		AllowedCallers:   &callers,
		HashOn:           &registry.HashOn{Cookie: &registry.HashCookie{Name: "c", TTL: &ttl}},
		OutlierDetection: &registry.OutlierDetection{},
	}.Normalize()
	yes := false
	for _, tt := range []struct {
		field  string
		change func(p *registry.Policy)
	}{
		{"protocol", func(p *registry.Policy) { p.Protocol = registry.GRPC }},
		{"port", func(p *registry.Policy) { p.Port = 1 }},
		{"secure_port", func(p *registry.Policy) { p.SecurePort = 1 }},
		{"plaintext", func(p *registry.Policy) { p.Plaintext = &yes }},
		{"allowed_callers", func(p *registry.Policy) { p.AllowedCallers = nil }},
		{"allowed_callers value", func(p *registry.Policy) { p.AllowedCallers = &[]string{"billing"} }},
		{"allowed_callers empty", func(p *registry.Policy) { p.AllowedCallers = &[]string{} }},
		{"load_balancing", func(p *registry.Policy) { p.LoadBalancing = registry.Maglev }},
		{"hash_on", func(p *registry.Policy) { p.HashOn = nil }},
		{"hash_on.header", func(p *registry.Policy) { p.HashOn = &registry.HashOn{Header: "h"} }},
		{"hash_on.source_ip", func(p *registry.Policy) { p.HashOn = &registry.HashOn{SourceIP: true} }},
		{"hash_on.cookie.name", func(p *registry.Policy) { p.HashOn.Cookie.Name = "d" }},
		{"hash_on.cookie.ttl", func(p *registry.Policy) { p.HashOn.Cookie.TTL = nil }},
		{"hash_on.cookie.ttl value", func(p *registry.Policy) { p.HashOn.Cookie.TTL = new(registry.Duration) }},
		{"hash_on.cookie.path", func(p *registry.Policy) { p.HashOn.Cookie.Path = "/" }},
		{"timeouts.connect", func(p *registry.Policy) { p.Timeouts.Connect++ }},
		{"timeouts.request", func(p *registry.Policy) { p.Timeouts.Request++ }},
		{"timeouts.idle", func(p *registry.Policy) { p.Timeouts.Idle++ }},
		{"retries.attempts", func(p *registry.Policy) { p.Retries.Attempts++ }},
		{"retries.on", func(p *registry.Policy) { p.Retries.On = append(slices.Clone(p.Retries.On), "reset") }},
		{"retries.per_try_timeout", func(p *registry.Policy) { p.Retries.PerTry++ }},
		{"retries.budget_percent", func(p *registry.Policy) { p.Retries.BudgetPerc++ }},
		{"circuit_breakers.max_connections", func(p *registry.Policy) { p.CircuitBreakers.MaxConnections++ }},
		{"circuit_breakers.max_pending_requests", func(p *registry.Policy) { p.CircuitBreakers.MaxPendingRequests++ }},
		{"circuit_breakers.max_requests", func(p *registry.Policy) { p.CircuitBreakers.MaxRequests++ }},
		{"circuit_breakers.max_retries", func(p *registry.Policy) { p.CircuitBreakers.MaxRetries++ }},
		{"outlier_detection", func(p *registry.Policy) { p.OutlierDetection = nil }},
		{"outlier_detection.consecutive_5xx", func(p *registry.Policy) { p.OutlierDetection.Consecutive5xx++ }},
		{"outlier_detection.interval", func(p *registry.Policy) { p.OutlierDetection.Interval++ }},
		{"outlier_detection.base_ejection_time", func(p *registry.Policy) { p.OutlierDetection.BaseEjectionTime++ }},
		{"outlier_detection.max_ejection_percent", func(p *registry.Policy) { p.OutlierDetection.MaxEjectionPercent++ }},
		{"explicit", func(p *registry.Policy) { p.Explicit = append(slices.Clone(p.Explicit), "retries.attempts") }},
	} {
		p := base.Clone()
		tt.change(&p)
		if keyOf(p) == keyOf(base) {
			t.Errorf("changing %s leaves the key as it was", tt.field)
		}
	}
	if n := countLeaves(registry.Policy{}); n != 27 {
		t.Errorf("registry.Policy has %d fields to compare (was 27): give the new ones a place in PolicyKey and a case here", n)
	}
}

// countLeaves counts the fields of a value's type that hold data,
// looking into structs and what pointers point to.
func countLeaves(v any) int {
	var count func(t reflect.Type) int
	count = func(t reflect.Type) int {
		switch t.Kind() {
		case reflect.Pointer:
			return count(t.Elem())
		case reflect.Struct:
			n := 0
			for f := range t.Fields() {
				n += count(f.Type)
			}
			return n
		}
		return 1
	}
	return count(reflect.TypeOf(v))
}

// TestTemplatesOfRandomPolicies: over random policies, valid and not, and
// random VIP names, clusters encoded from templates shared between the
// policies with one key are, byte for byte, the deterministic encoding of
// the clusters built for each VIP, and fail exactly where those fail to
// validate.
func TestTemplatesOfRandomPolicies(t *testing.T) {
	rnd := rand.New(rand.NewPCG(15, 1))
	kept := &keptTemplates{byKey: map[PolicyKey]*ClusterTemplate{}}
	pick := func(options ...string) string { return options[rnd.IntN(len(options))] }
	u32 := func(options ...uint32) uint32 { return options[rnd.IntN(len(options))] }
	dur := func() registry.Duration {
		return registry.Duration([]time.Duration{0, time.Millisecond, time.Second, 90 * time.Second, -time.Second}[rnd.IntN(5)])
	}
	failures := 0
	const cases = 2000
	for i := range cases {
		yes := rnd.IntN(2) == 0
		p := registry.Policy{
			Protocol:      registry.Protocol(pick("", "http1", "http2", "grpc")),
			Port:          u32(0, 80, 8080),
			SecurePort:    u32(0, 8443),
			LoadBalancing: registry.LoadBalancing(pick("", "round_robin", "least_request", "random", "ring_hash", "maglev")),
			Timeouts:      registry.Timeouts{Connect: dur(), Request: dur(), Idle: dur()},
			Retries: registry.Retries{
				Attempts: u32(0, 1, 3), PerTry: dur(), BudgetPerc: []float64{0, 20, 100, 150}[rnd.IntN(4)],
				On: [][]string{nil, {"5xx"}, {"reset", "connect-failure"}}[rnd.IntN(3)],
			},
			CircuitBreakers: registry.CircuitBreakers{MaxConnections: u32(0, 1, 1024), MaxRequests: u32(0, 100), MaxRetries: u32(0, 3)},
		}
		if rnd.IntN(3) == 0 {
			p.Plaintext = &yes
		}
		if rnd.IntN(3) == 0 {
			h := &registry.HashOn{Header: pick("", "x-user"), SourceIP: rnd.IntN(2) == 0}
			if rnd.IntN(2) == 0 {
				ttl := dur()
				h.Cookie = &registry.HashCookie{Name: pick("", "session"), Path: pick("", "/"), TTL: &ttl}
			}
			p.HashOn = h
		}
		if rnd.IntN(3) == 0 {
			p.OutlierDetection = &registry.OutlierDetection{
				Consecutive5xx: u32(0, 5), Interval: dur(), BaseEjectionTime: dur(), MaxEjectionPercent: u32(0, 10, 100, 101),
			}
		}
		// Two VIPs with the policy: the second one's clusters come from
		// the template made for the first.
		for _, vip := range []string{pick("a", "payments"), strings.Repeat("v", 63)} {
			svc := registry.Service{VIP: registry.VIP{Name: vip, Policy: p}}
			failures += sameClusters(t, fmt.Sprintf("case %d %s %+v", i, vip, p),
				VIPParts(vip, svc, true, SecureClusterPart|PlainClusterPart, nil),
				VIPParts(vip, svc, true, SecureClusterPart|PlainClusterPart, kept))
		}
	}
	if failures == 0 || failures >= 4*cases {
		t.Fatalf("%d of %d sets failed: the cases do not cover both outcomes", failures, 4*cases)
	}
	if kept.made > cases {
		t.Errorf("%d templates for %d policies: the VIPs of one policy do not share one", kept.made, cases)
	}
}

// sameClusters fails unless fromTemplate has the resources of built, with
// the same bytes, and fails where it fails; it returns how many sets
// failed.
func sameClusters(t *testing.T, what string, built, fromTemplate Yield) int {
	t.Helper()
	if got, want := partNames(fromTemplate), partNames(built); !slices.Equal(got, want) {
		t.Fatalf("%s: from templates %q, built %q", what, got, want)
	}
	failures := 0
	for j, set := range built.Sets {
		tset := fromTemplate.Sets[j]
		if (set.Err == nil) != (tset.Err == nil) {
			t.Fatalf("%s set %d: error %v from templates, %v built", what, j, tset.Err, set.Err)
		}
		if set.Err != nil {
			failures++
		}
		for k, r := range set.Resources {
			if !bytes.Equal(encoded(t, tset.Resources[k]), encoded(t, r)) {
				t.Fatalf("%s: %s differs from the message built for it", what, r.Name)
			}
		}
	}
	return failures
}

// BenchmarkVIPParts is what a VIP's first lookup costs in translation and
// encoding (what the cache does with a message included), for a VIP with
// the default policy and three instances: every part built, the cluster a
// sidecar asks for first built alone, and that cluster encoded from its
// policy's template.
func BenchmarkVIPParts(b *testing.B) {
	svc := registry.Service{VIP: registry.VIP{Name: "payments"}}
	for i := range 3 {
		svc.Instances = append(svc.Instances, registry.Instance{
			ID: fmt.Sprintf("payments-%d", i), VIP: "payments", Address: fmt.Sprintf("10.0.0.%d", i+1),
			Port: 8080, Weight: 1, Status: registry.StatusUp, Zone: "zone-a",
		})
	}
	kept := &keptTemplates{byKey: map[PolicyKey]*ClusterTemplate{}}
	for _, bc := range []struct {
		name      string
		parts     Part
		templates Templates
	}{
		{"all-parts", AllParts, nil},
		{"cluster-part", PlainClusterPart, nil},
		{"cluster-part-from-template", PlainClusterPart, kept},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, set := range VIPParts(svc.VIP.Name, svc, true, bc.parts, bc.templates).Sets {
					for _, r := range set.Resources {
						if r.Msg != nil {
							if _, err := marshal(r.Msg); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
			}
		})
	}
}
