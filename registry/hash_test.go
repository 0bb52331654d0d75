package registry

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHashOnValidation(t *testing.T) {
	ttl := Duration(time.Hour)
	neg := Duration(-time.Second)
	tests := []struct {
		name  string
		p     Policy
		field string // "" for valid
		hint  string
	}{
		{"ring_hash on a header", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Header: "x-user-id"}}, "", ""},
		{"maglev on a cookie", Policy{LoadBalancing: Maglev, HashOn: &HashOn{Cookie: &HashCookie{Name: "session", TTL: &ttl, Path: "/"}}}, "", ""},
		{"ring_hash on the caller", Policy{LoadBalancing: RingHash, HashOn: &HashOn{SourceIP: true}}, "", ""},
		{"ring_hash without a key", Policy{LoadBalancing: RingHash}, "policy.hash_on", "hash_on: {header: x-user-id}"},
		{"maglev without a key", Policy{LoadBalancing: Maglev}, "policy.hash_on", "say what to hash"},
		{"a key without hashing", Policy{HashOn: &HashOn{Header: "x-user-id"}}, "policy.hash_on", "applies only to load_balancing ring_hash or maglev, not round_robin"},
		{"two keys", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Header: "a", SourceIP: true}}, "policy.hash_on", "exactly one"},
		{"no key set", Policy{LoadBalancing: RingHash, HashOn: &HashOn{}}, "policy.hash_on", "exactly one"},
		{"upper-case header", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Header: "X-User"}}, "policy.hash_on.header", "lower-case"},
		{"pseudo-header", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Header: ":path"}}, "policy.hash_on.header", "not a valid name"},
		{"cookie without a name", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Cookie: &HashCookie{}}}, "policy.hash_on.cookie.name", "1 to 128"},
		{"negative ttl", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Cookie: &HashCookie{Name: "s", TTL: &neg}}}, "policy.hash_on.cookie.ttl", "session cookie"},
		{"path with ;", Policy{LoadBalancing: RingHash, HashOn: &HashOn{Cookie: &HashCookie{Name: "s", Path: "/a;b"}}}, "policy.hash_on.cookie.path", "without ';'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (VIP{Name: "payments", Policy: tt.p}).Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(err.Error(), tt.hint) {
				t.Fatalf("error %v; want one on %s saying %q", err, tt.field, tt.hint)
			}
		})
	}
}

// TestHashKeyOfAStoredPolicy: a ring_hash policy stored before hash_on
// existed is refused only as ErrNoHashKey (a store reading it back accepts
// that), and Normalize gives it the caller's address as its key.
func TestHashKeyOfAStoredPolicy(t *testing.T) {
	var p Policy
	if err := json.Unmarshal([]byte(`{"load_balancing":"ring_hash"}`), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); !errors.Is(err, ErrNoHashKey) {
		t.Fatalf("Validate = %v, want ErrNoHashKey", err)
	}
	if n := p.Normalize(); n.HashOn == nil || !n.HashOn.SourceIP {
		t.Fatalf("normalized: hash_on %+v, want source_ip", n.HashOn)
	}
	if err := p.Normalize().Validate(); err != nil {
		t.Fatalf("the normalized stored policy does not validate: %v", err)
	}
}

func TestHashOnRoundTripsAndClones(t *testing.T) {
	ttl := Duration(0)
	in := Policy{LoadBalancing: RingHash, HashOn: &HashOn{Cookie: &HashCookie{Name: "session", TTL: &ttl}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"hash_on":{"cookie":{"name":"session","ttl":"0s"}}`) {
		t.Fatalf("on the wire: %s; want the session cookie's ttl 0s kept", b)
	}
	var out Policy
	if err := json.Unmarshal(b, &out); err != nil || !out.Equal(in) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	c := in.Clone()
	*c.HashOn.Cookie.TTL = Duration(time.Hour)
	c.HashOn.Cookie.Name = "other"
	if *in.HashOn.Cookie.TTL != 0 || in.HashOn.Cookie.Name != "session" {
		t.Fatalf("changing the clone changed the original: %+v", in.HashOn.Cookie)
	}
}
