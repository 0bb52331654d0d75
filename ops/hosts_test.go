package ops

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHostsAllows(t *testing.T) {
	loopback := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 18080}
	tests := []struct {
		name   string
		listen net.Addr
		extra  []string
		host   string
		want   bool
	}{
		{"loopback address", loopback, nil, "127.0.0.1:18080", true},
		{"localhost", loopback, nil, "LocalHost:18080", true},
		{"IPv6 loopback", loopback, nil, "[::1]:18080", true},
		{"no Host", loopback, nil, "", true},
		{"rebinding name", loopback, nil, "attacker.example:18080", false},
		{"a name on the list", loopback, []string{"meshd.internal"}, "meshd.internal.", true},
		{"another address", loopback, nil, "10.1.2.3:18080", false},
		{"the address listened on", &net.TCPAddr{IP: net.ParseIP("10.1.2.3")}, nil, "10.1.2.3:18080", true},
		{"anything with *", loopback, []string{"*"}, "attacker.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewHosts(tt.listen, tt.extra).Allows(tt.host); got != tt.want {
				t.Fatalf("Allows(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

// TestHostsOfAllInterfaces: listening on every interface allows every
// address of this machine.
func TestHostsOfAllInterfaces(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	h := NewHosts(&net.TCPAddr{IP: net.IPv4zero}, nil)
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !h.Allows(net.JoinHostPort(ipn.IP.String(), "18080")) {
			t.Errorf("interface address %s refused", ipn.IP)
		}
	}
}

func TestGuardHostsAnswersInJSON(t *testing.T) {
	h := NewHosts(&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, nil)
	reached := false
	srv := guardHosts(h, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
	req := httptest.NewRequest(http.MethodGet, "/v1/vips", nil)
	req.Host = "evil.example"
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || rec.Header().Get("Content-Type") != "application/json" || reached {
		t.Fatalf("foreign Host: %d %q, handler reached %v", rec.Code, rec.Header().Get("Content-Type"), reached)
	}
}
