package names

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateVIP(t *testing.T) {
	good := []string{"a", "payments", "payments-v2", "0abc", strings.Repeat("a", 63)}
	for _, s := range good {
		if err := ValidateVIP(s); err != nil {
			t.Errorf("ValidateVIP(%q) = %v, want nil", s, err)
		}
	}
	bad := []string{"", "-a", "a-", "Payments", "pay_ments", "pay.ments", "pay ments", strings.Repeat("a", 64), "ü"}
	for _, s := range bad {
		if err := ValidateVIP(s); !errors.Is(err, ErrInvalidVIP) {
			t.Errorf("ValidateVIP(%q) = %v, want ErrInvalidVIP", s, err)
		}
	}
}

func TestParseCluster(t *testing.T) {
	tests := []struct {
		name   string
		vip    string
		secure bool
		ok     bool
	}{
		{"payments.vip", "payments", false, true},
		{"payments.svip", "payments", true, true},
		{"payments", "", false, false},
		{".vip", "", false, false},
		{"Pay.vip", "", false, false},
		{"a.b.vip", "", false, false},
		{"payments.vip.svip", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vip, secure, ok := ParseCluster(tt.name)
			if vip != tt.vip || secure != tt.secure || ok != tt.ok {
				t.Errorf("ParseCluster(%q) = %q, %v, %v; want %q, %v, %v", tt.name, vip, secure, ok, tt.vip, tt.secure, tt.ok)
			}
			if ok && Cluster(vip, secure) != tt.name {
				t.Errorf("Cluster(%q, %v) = %q, want round trip to %q", vip, secure, Cluster(vip, secure), tt.name)
			}
		})
	}
}

func TestParseResource(t *testing.T) {
	tests := []struct {
		name   string
		vip    string
		secure bool
		ok     bool
	}{
		{"payments.vip", "payments", false, true},
		{"payments.svip", "payments", true, true},
		{"payments", "payments", false, true}, // the bare API listener
		{"xspace-outbound-15001", "", false, false},
		{"xspace-pay.vip", "xspace-pay", false, true},
		{"Payments", "", false, false},
		{"a.b", "", false, false},
		{"", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vip, secure, ok := ParseResource(tt.name)
			if vip != tt.vip || secure != tt.secure || ok != tt.ok {
				t.Errorf("ParseResource(%q) = %q, %v, %v; want %q, %v, %v", tt.name, vip, secure, ok, tt.vip, tt.secure, tt.ok)
			}
		})
	}
}

// TestAPIListeners: every API listener name parses back to its VIP, and
// none is one of a sidecar's own listeners.
func TestAPIListeners(t *testing.T) {
	for _, tt := range []struct {
		vip  string
		want []string
	}{
		{"payments", []string{"payments", "payments.vip"}},
		{OutboundListener(15001), []string{OutboundListener(15001) + ".vip"}},
		{InboundListener(8443, 8080), []string{InboundListener(8443, 8080) + ".vip"}},
	} {
		got := APIListeners(tt.vip)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("APIListeners(%q) = %v, want %v", tt.vip, got, tt.want)
		}
		for _, name := range got {
			if vip, secure, ok := ParseResource(name); vip != tt.vip || secure || !ok {
				t.Errorf("ParseResource(%q) = %q, %v, %v; want %q", name, vip, secure, ok, tt.vip)
			}
		}
	}
}

func TestClusterForAuthority(t *testing.T) {
	tests := []struct {
		authority string
		want      string
		ok        bool
	}{
		{"payments", "payments.vip", true},
		{"payments.vip", "payments.vip", true},
		{"payments:8080", "payments.vip", true},
		{"payments.vip:8080", "payments.vip", true},
		{"payments.svip", "payments.svip", true},
		{"Payments.SVIP:443", "payments.svip", true},
		{"example.com", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := ClusterForAuthority(tt.authority)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ClusterForAuthority(%q) = %q, %v; want %q, %v", tt.authority, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSPIFFE(t *testing.T) {
	if got := SPIFFE("payments"); got != "spiffe://xspace/svc/payments" {
		t.Fatalf("SPIFFE = %q", got)
	}
	if svc, ok := ParseSPIFFE(SPIFFE("payments")); !ok || svc != "payments" {
		t.Fatalf("ParseSPIFFE round trip = %q, %v", svc, ok)
	}
	if _, ok := ParseSPIFFE("spiffe://other/svc/payments"); ok {
		t.Fatal("ParseSPIFFE accepted a foreign trust domain")
	}
}

func TestSidecarPortsCheck(t *testing.T) {
	for _, tc := range []struct {
		p    SidecarPorts
		want string // "" when valid
	}{
		{SidecarPorts{}, ""},
		{SidecarPorts{Outbound: 15001}, ""},
		{SidecarPorts{Outbound: 15001, Inbound: 15443, App: 8080}, ""},
		{SidecarPorts{Outbound: 70000}, "not a port between 1 and 65535"},
		{SidecarPorts{Inbound: 15443, App: 8080}, "outbound port is missing"},
		{SidecarPorts{Outbound: 15001, Inbound: 15443}, "needs the app port"},
		{SidecarPorts{Outbound: 15001, App: 8080}, "only used with an inbound port"},
		{SidecarPorts{Outbound: 15001, Inbound: 15001, App: 8080}, "outbound and inbound ports are both 15001"},
		{SidecarPorts{Outbound: 15001, Inbound: 15443, App: 15001}, "outbound and app ports are both 15001"},
	} {
		err := tc.p.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Check() = %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestInboundRoute: an inbound route name parses back to its service and
// app port, reads as a resource of that VIP, and is never taken for an
// inbound listener's name or anything else.
func TestInboundRoute(t *testing.T) {
	name := InboundRoute("ledger-2", 8080)
	if name != "xspace-inbound-route-8080-ledger-2" {
		t.Fatalf("InboundRoute = %q", name)
	}
	if svc, port, ok := ParseInboundRoute(name); svc != "ledger-2" || port != 8080 || !ok {
		t.Errorf("ParseInboundRoute(%q) = %q, %d, %v", name, svc, port, ok)
	}
	if vip, secure, ok := ParseResource(name); vip != "ledger-2" || !secure || !ok {
		t.Errorf("ParseResource(%q) = %q, %v, %v; want ledger-2, secure", name, vip, secure, ok)
	}
	for _, bad := range []string{
		InboundListener(8443, 8080), "xspace-inbound-route-8080", "xspace-inbound-route-8080-", "xspace-inbound-route-0-a",
		"xspace-inbound-route-08080-a", "xspace-inbound-route-70000-a", "xspace-inbound-route-x-a", "xspace-inbound-route-8080-A",
	} {
		if svc, port, ok := ParseInboundRoute(bad); ok {
			t.Errorf("ParseInboundRoute(%q) = %q, %d; want not an inbound route", bad, svc, port)
		}
	}
	if _, _, ok := ParseResource(InboundListener(8443, 8080)); ok {
		t.Errorf("ParseResource(%q) took an inbound listener for a VIP's resource", InboundListener(8443, 8080))
	}
}
