package ops

import (
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/prisma-systems/xspace-mesh/api"
)

// Hosts are the names and addresses meshd answers HTTP requests for. A web
// page a browser loads from elsewhere can reach meshd's loopback address
// through DNS rebinding (its own name made to resolve to 127.0.0.1), but its
// requests still carry that name in Host: refusing unknown Hosts closes
// the API to it.
type Hosts struct {
	any   bool
	names map[string]struct{}
}

// NewHosts allows localhost, the loopback addresses, the machine's host
// name, the address listen is bound to (every interface address when it is
// bound to all), and extra: the DNS names meshd is reached by. "*" in extra
// allows every Host.
func NewHosts(listen net.Addr, extra []string) Hosts {
	h := Hosts{names: map[string]struct{}{}}
	add := func(name string) { h.names[normalizeHost(name)] = struct{}{} }
	for _, n := range []string{"localhost", "127.0.0.1", "::1"} {
		add(n)
	}
	if name, err := os.Hostname(); err == nil {
		add(name)
	}
	if tcp, ok := listen.(*net.TCPAddr); ok {
		add(tcp.IP.String())
		if tcp.IP.IsUnspecified() {
			if addrs, err := net.InterfaceAddrs(); err == nil {
				for _, a := range addrs {
					if ipn, ok := a.(*net.IPNet); ok {
						add(ipn.IP.String())
					}
				}
			}
		}
	}
	for _, n := range extra {
		if n == "*" {
			h.any = true
		}
		add(n)
	}
	return h
}

// Allows reports whether a request's Host (with or without a port) is one
// meshd answers for. A request without a Host (HTTP/1.0) comes from no
// browser, and is allowed.
func (h Hosts) Allows(host string) bool {
	if h.any || host == "" {
		return true
	}
	_, ok := h.names[normalizeHost(host)]
	return ok
}

// normalizeHost strips a port, IPv6 brackets and a trailing dot, in lower case.
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
}

// guardHosts refuses requests whose Host is not one of h, with 403 and the
// API's JSON error, before they reach next.
func guardHosts(h Hosts, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.Allows(r.Host) {
			api.WriteError(w, http.StatusForbidden, api.CodeForbidden,
				"Host "+quote(r.Host)+" is not one of meshd's names or addresses; if clients reach meshd by this name, add it to http.allowed_hosts",
				"Host")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// quote quotes a client-supplied string for a message, bounded in length.
func quote(s string) string {
	const limit = 100
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}
