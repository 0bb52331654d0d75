package registry

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestProxylessFallback(t *testing.T) {
	for lb, want := range map[LoadBalancing]LoadBalancing{
		RoundRobin: RoundRobin, RingHash: RingHash,
		LeastRequest: RoundRobin, Random: RoundRobin, Maglev: RingHash,
	} {
		if got := lb.ProxylessFallback(); got != want {
			t.Errorf("%s.ProxylessFallback() = %s, want %s", lb, got, want)
		}
	}
}

func TestProxylessRetryConditions(t *testing.T) {
	r := Retries{On: []string{"connect-failure", "unavailable", "5xx", "cancelled"}}
	if got := r.ProxylessRetryConditions(); !slices.Equal(got, []string{"unavailable", "cancelled"}) {
		t.Errorf("ProxylessRetryConditions() = %v, want [unavailable cancelled]", got)
	}
}

// TestProxylessNotes: what `meshctl vip get` says proxyless gRPC clients
// get instead of what the policy asks. Each want is a substring of one
// note, in order; a policy they get as asked has no note.
func TestProxylessNotes(t *testing.T) {
	noTimeout := Timeouts{Request: 0}
	explicit := []string{"timeouts.request"}
	tests := []struct {
		name   string
		policy Policy
		want   []string
	}{
		{"not grpc", Policy{Protocol: HTTP2, LoadBalancing: Random}, nil},
		{"mutual TLS only", Policy{Protocol: GRPC, Plaintext: new(false), LoadBalancing: Random}, nil},
		{
			"defaults",
			Policy{Protocol: GRPC},
			[]string{"retries.on: connect-failure, refused-stream, reset are not gRPC status codes", "timeouts.request: gRPC clients end every call 15s"},
		},
		{
			"as asked",
			Policy{Protocol: GRPC, Timeouts: noTimeout, Explicit: explicit, Retries: Retries{On: []string{"unavailable"}}},
			nil,
		},
		{
			"least request",
			Policy{Protocol: GRPC, LoadBalancing: LeastRequest, Timeouts: noTimeout, Explicit: explicit, Retries: Retries{On: []string{"unavailable"}}},
			[]string{"load_balancing: grpc-go uses least_request; grpc-js-xds has none and uses round_robin"},
		},
		{
			"maglev",
			Policy{Protocol: GRPC, LoadBalancing: Maglev, HashOn: &HashOn{Header: "x-user"}, Timeouts: noTimeout, Explicit: explicit, Retries: Retries{On: []string{"unavailable"}}},
			[]string{"load_balancing: gRPC clients have no maglev and use ring_hash"},
		},
		{
			"retries",
			Policy{Protocol: GRPC, Timeouts: noTimeout, Explicit: explicit, Retries: Retries{
				Attempts: 7, On: []string{"unavailable", "5xx"}, PerTry: Duration(time.Second),
			}},
			[]string{"retries.on: gRPC clients retry on unavailable only; they ignore 5xx", "retries.attempts: gRPC clients retry at most 4 times", "retries.per_try_timeout"},
		},
		{
			"outlier detection",
			Policy{Protocol: GRPC, Timeouts: noTimeout, Explicit: explicit, Retries: Retries{On: []string{"unavailable"}}, OutlierDetection: &OutlierDetection{}},
			[]string{"outlier_detection: gRPC clients have no consecutive_5xx; they, and sidecars, eject an instance that failed more than 85% of 5 calls"},
		},
		{
			"outlier detection without consecutive 5xx",
			Policy{
				Protocol: GRPC, Timeouts: noTimeout, Retries: Retries{On: []string{"unavailable"}},
				OutlierDetection: &OutlierDetection{}, Explicit: []string{"timeouts.request", "outlier_detection.consecutive_5xx"},
			},
			[]string{"outlier_detection: with consecutive_5xx 0, gRPC clients eject only on success rate"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.ProxylessNotes()
			if len(got) != len(tt.want) {
				t.Fatalf("notes %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("note %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
