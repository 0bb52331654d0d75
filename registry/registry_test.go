package registry

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestNormalizeFillsDefaultsAndIsIdempotent(t *testing.T) {
	p := Policy{}.Normalize()
	if p.Protocol != HTTP1 || p.LoadBalancing != RoundRobin || !p.PlaintextAllowed() ||
		p.Timeouts.Connect != DefaultConnectTimeout || p.Retries.Attempts != DefaultRetryAttempts ||
		p.CircuitBreakers.MaxConnections != DefaultMaxConnections || p.OutlierDetection != nil {
		t.Fatalf("defaults not applied: %+v", p)
	}
	if again := p.Normalize(); !reflect.DeepEqual(again, p) {
		t.Fatalf("Normalize is not idempotent:\n%+v\n%+v", again, p)
	}
	custom := Policy{Protocol: GRPC, Timeouts: Timeouts{Connect: Duration(2 * time.Second)}, OutlierDetection: &OutlierDetection{}}.Normalize()
	if custom.Protocol != GRPC || custom.Timeouts.Connect.D() != 2*time.Second || custom.OutlierDetection.Consecutive5xx != 5 {
		t.Fatalf("custom values lost or outlier defaults missing: %+v", custom)
	}
	no := false
	if (Policy{Plaintext: &no}).Normalize().PlaintextAllowed() {
		t.Fatal("plaintext: false was overridden")
	}
	inst := Instance{}.Normalize()
	if inst.Weight != DefaultWeight || inst.Status != StatusUp || inst.TTL != DefaultTTL {
		t.Fatalf("instance defaults: %+v", inst)
	}
}

func TestValidate(t *testing.T) {
	good := Instance{VIP: "payments", ID: "p-1.a_b:c", Address: "10.0.0.1", Port: 8080}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid instance rejected: %v", err)
	}
	instances := []struct {
		field string
		edit  func(*Instance)
	}{
		{"vip", func(i *Instance) { i.VIP = "Payments" }},
		{"id", func(i *Instance) { i.ID = "" }},
		{"id", func(i *Instance) { i.ID = "a/b" }},
		{"address", func(i *Instance) { i.Address = "payments.internal" }},
		{"address", func(i *Instance) { i.Address = "0.0.0.0" }},
		{"address", func(i *Instance) { i.Address = "fe80::1%eth0" }},
		{"port", func(i *Instance) { i.Port = 0 }},
		{"port", func(i *Instance) { i.Port = 65536 }},
		{"secure_port", func(i *Instance) { i.SecurePort = 70000 }},
		{"weight", func(i *Instance) { i.Weight = MaxWeight + 1 }},
		{"status", func(i *Instance) { i.Status = "ALIVE" }},
		{"ttl", func(i *Instance) { i.TTL = Duration(time.Millisecond) }},
		{"metadata", func(i *Instance) { i.Metadata = map[string]string{"": "x"} }},
		{"address", func(i *Instance) { i.Address = "::ffff:0.0.0.0" }},
		{"address", func(i *Instance) { i.Address = "::ffff:10.0.0.1" }},
		{"address", func(i *Instance) { i.Address = "::" }},
		{"address", func(i *Instance) { i.Address = "255.255.255.255" }},
		{"id", func(i *Instance) { i.ID = "." }},
		{"id", func(i *Instance) { i.ID = ".." }},
		{"zone", func(i *Instance) { i.Zone = "eu\x00west" }},
		{"zone", func(i *Instance) { i.Zone = "eu-\xffwest" }},
		{"metadata", func(i *Instance) { i.Metadata = map[string]string{"a\tb": "x"} }},
		{"metadata.k", func(i *Instance) { i.Metadata = map[string]string{"k": "line\nbreak"} }},
		{"metadata", func(i *Instance) { i.Metadata = map[string]string{"xspace-zone": "a"} }},
		{"metadata", func(i *Instance) { i.Metadata = map[string]string{"Xspace-Status": "UP"} }},
	}
	for _, tt := range instances {
		i := good
		tt.edit(&i)
		var ve *ValidationError
		if err := i.Validate(); !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%+v: error %v, want a ValidationError on %q", i, err, tt.field)
		}
	}
	vips := []struct {
		field string
		p     Policy
	}{
		{"policy.protocol", Policy{Protocol: "http3"}},
		{"policy.load_balancing", Policy{LoadBalancing: "fastest"}},
		{"policy.port", Policy{Port: 70000}},
		{"policy.timeouts.connect", Policy{Timeouts: Timeouts{Connect: -1}}},
		{"policy.retries.attempts", Policy{Retries: Retries{Attempts: 11}}},
		{"policy.retries.on", Policy{Retries: Retries{On: []string{"sometimes"}}}},
		{"policy.retries.budget_percent", Policy{Retries: Retries{BudgetPerc: 101}}},
		{"policy.outlier_detection.max_ejection_percent", Policy{OutlierDetection: &OutlierDetection{MaxEjectionPercent: 101}}},
	}
	for _, tt := range vips {
		var ve *ValidationError
		if err := (VIP{Name: "payments", Policy: tt.p}).Validate(); !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%+v: error %v, want a ValidationError on %q", tt.p, err, tt.field)
		}
	}
	if err := (VIP{Name: "payments", Policy: Policy{}.Normalize()}).Validate(); err != nil {
		t.Fatalf("the normalized default policy does not validate: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"1m30s"`), &d); err != nil || d.D() != 90*time.Second {
		t.Fatalf("unmarshal: %v %v", d, err)
	}
	b, _ := json.Marshal(Duration(250 * time.Millisecond))
	if string(b) != `"250ms"` {
		t.Fatalf("marshal: %s", b)
	}
	for _, bad := range []string{`"soon"`, `30`, `"30"`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil || !strings.Contains(err.Error(), "duration") {
			t.Errorf("%s: error %v, want one explaining durations", bad, err)
		}
	}
}

func TestPolicyCloneSharesNothing(t *testing.T) {
	p := Policy{OutlierDetection: &OutlierDetection{Consecutive5xx: 3}, Retries: Retries{On: []string{"5xx"}}}.Normalize()
	c := p.Clone()
	*c.Plaintext = false
	c.OutlierDetection.Consecutive5xx = 9
	c.Retries.On[0] = "reset"
	if !*p.Plaintext || p.OutlierDetection.Consecutive5xx != 3 || p.Retries.On[0] != "5xx" {
		t.Fatalf("changing the clone changed the original: %+v", p)
	}
}

// TestPolicyIsZero: IsZero is true for the zero Policy only: setting any
// one field, however deep, to a non-zero value (an empty list included)
// makes it false. A field added to Policy and left out of IsZero fails here.
func TestPolicyIsZero(t *testing.T) {
	if !(Policy{}).IsZero() {
		t.Fatal("the zero Policy is not zero")
	}
	var set func(v reflect.Value, path string)
	set = func(v reflect.Value, path string) {
		for i := range v.NumField() {
			f, name := v.Field(i), path+v.Type().Field(i).Name
			if f.Kind() == reflect.Struct {
				set(f, name+".")
				continue
			}
			var p Policy
			target := reflect.ValueOf(&p).Elem().FieldByIndex(fieldPath(t, reflect.TypeOf(p), name))
			switch target.Kind() {
			case reflect.Pointer:
				target.Set(reflect.New(target.Type().Elem()))
			case reflect.Slice:
				target.Set(reflect.MakeSlice(target.Type(), 0, 0))
			case reflect.String:
				target.SetString("x")
			case reflect.Bool:
				target.SetBool(true)
			case reflect.Int, reflect.Int64:
				target.SetInt(1)
			case reflect.Uint32:
				target.SetUint(1)
			case reflect.Float64:
				target.SetFloat(1)
			default:
				t.Fatalf("%s: a %s; teach this test to set it", name, target.Kind())
			}
			if p.IsZero() {
				t.Errorf("a Policy with %s set is zero", name)
			}
		}
	}
	set(reflect.ValueOf(Policy{}), "")
}

// fieldPath is the index path of a dotted field name in typ.
func fieldPath(t *testing.T, typ reflect.Type, name string) []int {
	t.Helper()
	var path []int
	for part := range strings.SplitSeq(name, ".") {
		f, ok := typ.FieldByName(part)
		if !ok {
			t.Fatalf("no field %s", name)
		}
		path = append(path, f.Index...)
		typ = f.Type
	}
	return path
}
