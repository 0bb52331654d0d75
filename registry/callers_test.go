package registry

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAllowedCallersOnTheWire: left out, an empty list and a list are three
// different policies that each survive a JSON round trip (the form every
// store keeps them in); a list is sorted and rid of repeats; null is
// refused, naming the field.
func TestAllowedCallersOnTheWire(t *testing.T) {
	tests := []struct {
		name string
		json string
		want *[]string // normalized
		wire string    // the normalized policy's allowed_callers as written, "" when left out
	}{
		{"left out: any mesh identity", `{}`, nil, ""},
		{"empty: nobody", `{"allowed_callers":[]}`, &[]string{}, `[]`},
		{"a list, sorted, without repeats", `{"allowed_callers":["web","orders","web"]}`, &[]string{"orders", "web"}, `["orders","web"]`},
	}
	decoded := map[string]Policy{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Policy
			if err := json.Unmarshal([]byte(tt.json), &p); err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			n := p.Normalize()
			if !cmp.Equal(n.AllowedCallers, tt.want) {
				t.Fatalf("normalized allowed_callers = %v, want %v", deref(n.AllowedCallers), deref(tt.want))
			}
			if again := n.Normalize(); !again.Equal(n) {
				t.Fatal("Normalize is not idempotent")
			}
			b, err := json.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			var wire map[string]json.RawMessage
			if err := json.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			if got := string(wire["allowed_callers"]); got != tt.wire {
				t.Fatalf("written as %q in %s, want %q", got, b, tt.wire)
			}
			var back Policy
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !back.Equal(n) || !cmp.Equal(back.AllowedCallers, n.AllowedCallers) {
				t.Fatalf("round trip: %v, want %v", deref(back.AllowedCallers), deref(n.AllowedCallers))
			}
			decoded[tt.name] = n
		})
	}
	// Equal tells the three apart.
	for a, pa := range decoded {
		for b, pb := range decoded {
			if (a == b) != pa.Equal(pb) {
				t.Errorf("Equal(%s, %s) = %v", a, b, pa.Equal(pb))
			}
		}
	}

	var p Policy
	err := json.Unmarshal([]byte(`{"allowed_callers":null}`), &p)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "policy.allowed_callers" || !strings.Contains(ve.Message, "give [] to let nobody") {
		t.Fatalf("allowed_callers: null: %v; want a ValidationError on policy.allowed_callers", err)
	}
}

func deref(l *[]string) any {
	if l == nil {
		return "<left out>"
	}
	return *l
}

// TestAllowedCallersValidate: every entry must be a service name; the
// error names the entry by its index and says what a name is.
func TestAllowedCallersValidate(t *testing.T) {
	tests := []struct {
		callers []string
		field   string
		says    string
	}{
		{[]string{"orders", "web", "Pay ments"}, "policy.allowed_callers[2]", `"Pay ments" is not a service name`},
		{[]string{""}, "policy.allowed_callers[0]", "empty"},
		{[]string{"orders.svip"}, "policy.allowed_callers[0]", `contains "."`},
		{[]string{"-orders"}, "policy.allowed_callers[0]", "starts or ends with '-'"},
		{make([]string, MaxAllowedCallers+1), "policy.allowed_callers", "at most 1000"},
	}
	for _, tt := range tests {
		err := (VIP{Name: "payments", Policy: Policy{AllowedCallers: &tt.callers}}).Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Error(), tt.says) {
			t.Errorf("allowed_callers %.60q: %v; want an error on %s saying %q", tt.callers, err, tt.field, tt.says)
		}
	}
	for _, ok := range [][]string{{}, {"orders"}, {"payments", "a", "0-9"}} {
		if err := (VIP{Name: "payments", Policy: Policy{AllowedCallers: &ok}}).Validate(); err != nil {
			t.Errorf("allowed_callers %q refused: %v", ok, err)
		}
	}
}

func TestAllowedCallersCloneSharesNothing(t *testing.T) {
	p := Policy{AllowedCallers: &[]string{"orders"}}.Normalize()
	c := p.Clone()
	(*c.AllowedCallers)[0] = "web"
	*c.AllowedCallers = append(*c.AllowedCallers, "batch")
	if got := *p.AllowedCallers; len(got) != 1 || got[0] != "orders" {
		t.Fatalf("changing the clone changed the original: %v", got)
	}
}

// TestCallerNotes: what meshctl prints under a VIP says who may call it,
// and, while plaintext is served, that plaintext callers carry no identity
// and how to turn plaintext off.
func TestCallerNotes(t *testing.T) {
	no := false
	tests := []struct {
		p    Policy
		want []string
	}{
		{Policy{}, []string{"any service of the mesh, over mutual TLS (payments.svip)", "payments.vip carries no caller identity", "set plaintext: false"}},
		{Policy{AllowedCallers: &[]string{}}, []string{"allowed_callers: none", "403", "payments.vip carries no caller identity"}},
		{Policy{AllowedCallers: &[]string{"web", "orders"}}, []string{"allowed_callers: orders, web, over mutual TLS (payments.svip)", "allowed_callers does not apply to it"}},
	}
	for _, tt := range tests {
		got := strings.Join(tt.p.CallerNotes("payments"), "\n")
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("notes for %v:\n%s\nwant them to say %q", deref(tt.p.AllowedCallers), got, w)
			}
		}
	}
	off := Policy{Plaintext: &no, AllowedCallers: &[]string{"orders"}}.CallerNotes("payments")
	if len(off) != 1 || strings.Contains(off[0], "plaintext") {
		t.Errorf("notes with plaintext: false = %q; want the callers only", off)
	}
}
