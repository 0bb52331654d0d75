package registry

import (
	"errors"
	"fmt"
)

// HashOn is what ring_hash and maglev hash a request on, so that requests
// with the same key reach the same instance while it is there. Exactly one
// field is set.
type HashOn struct {
	// Header hashes on a request header (its name in lower case, e.g.
	// "x-user-id"). A request without it is sent to a random instance.
	Header string `json:"header,omitempty"`
	// Cookie hashes on an HTTP cookie.
	Cookie *HashCookie `json:"cookie,omitempty"`
	// SourceIP hashes on the caller's address (for a proxyless gRPC
	// client: on its channel, which is the same caller).
	SourceIP bool `json:"source_ip,omitempty"`
}

// HashCookie hashes on a cookie.
type HashCookie struct {
	Name string `json:"name"`
	// TTL, when given, makes the sidecar set the cookie on a response to a
	// request that lacked it, living this long (0s: a session cookie), so
	// that a client's later requests stick. Without it a request that lacks
	// the cookie is sent to a random instance.
	TTL *Duration `json:"ttl,omitempty"`
	// Path is the cookie's path when the sidecar sets it.
	Path string `json:"path,omitempty"`
}

// ErrNoHashKey is returned (wrapped) by Validate for a ring_hash or maglev
// policy without hash_on. Policies stored before hash_on existed may lack
// it: Normalize gives them a key (see Normalize), and a store reading them
// back may accept this error.
var ErrNoHashKey = errors.New("no hash key")

// Hashed reports whether a load-balancing policy picks an instance by a
// hash of the request (and so needs HashOn).
func (lb LoadBalancing) Hashed() bool { return lb == RingHash || lb == Maglev }

// validHashing checks that a hashing policy says what to hash, and that
// only a hashing policy does.
func (p Policy) validHashing() error {
	h := p.HashOn
	switch {
	case h == nil && p.LoadBalancing.Hashed():
		return fmt.Errorf("%w: %w", ErrNoHashKey, invalid("policy.hash_on",
			"%s picks an instance by a hash of the request; say what to hash: hash_on: {header: x-user-id}, {cookie: {name: session, ttl: 1h}} or {source_ip: true}",
			p.LoadBalancing))
	case h == nil:
		return nil
	case !p.LoadBalancing.Hashed():
		return invalid("policy.hash_on", "applies only to load_balancing ring_hash or maglev, not %s; remove it or change load_balancing", orDefault(p.LoadBalancing))
	}
	set := 0
	for _, ok := range []bool{h.Header != "", h.Cookie != nil, h.SourceIP} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return invalid("policy.hash_on", "set exactly one of header, cookie or source_ip (%d set)", set)
	}
	if h.Header != "" {
		if err := validToken("policy.hash_on.header", h.Header, true); err != nil {
			return err
		}
	}
	if c := h.Cookie; c != nil {
		if p.Protocol == GRPC {
			return invalid("policy.hash_on.cookie", "gRPC calls carry no cookies; hash on a header ({header: x-user-id}) or on the caller ({source_ip: true})")
		}
		if err := validToken("policy.hash_on.cookie.name", c.Name, false); err != nil {
			return err
		}
		if c.TTL != nil && (*c.TTL < 0 || *c.TTL > Duration(maxCookieTTL)) {
			return invalid("policy.hash_on.cookie.ttl", "%s is out of range; use 0s (a session cookie) to 8760h", c.TTL.D())
		}
		for _, r := range c.Path {
			if r < 0x21 || r > 0x7e || r == ';' {
				return invalid("policy.hash_on.cookie.path", "%q is not a cookie path; use printable characters without ';'", c.Path)
			}
		}
	}
	return nil
}

// maxCookieTTL bounds a hash cookie's lifetime: a year.
const maxCookieTTL = 8760 * 60 * 60 * 1e9

func orDefault(lb LoadBalancing) LoadBalancing {
	if lb == "" {
		return DefaultLoadBalancing
	}
	return lb
}

// validToken checks an HTTP header or cookie name: an RFC 9110 token, in
// lower case for a header (sidecars match header names in lower case).
func validToken(field, s string, lower bool) error {
	if s == "" || len(s) > 128 {
		return invalid(field, "%q must be 1 to 128 characters", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r >= 'A' && r <= 'Z' && !lower) ||
			r < 0x7f && r > 0x20 && isTokenPunct(byte(r))
		if !ok {
			hint := "letters, digits and !#$%&'*+-.^_`|~"
			if lower {
				hint = "lower-case letters, digits and !#$%&'*+-.^_`|~"
			}
			return invalid(field, "%q is not a valid name; use %s", s, hint)
		}
	}
	if lower && s[0] == ':' {
		return invalid(field, "%q is a pseudo-header; hash on a request header", s)
	}
	return nil
}

func isTokenPunct(c byte) bool {
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
