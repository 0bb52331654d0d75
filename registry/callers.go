package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/prisma-systems/xspace-mesh/names"
)

// Who may call a VIP. Its policy's allowed_callers names the services
// whose sidecars may call it over mutual TLS (<vip>.svip): the sidecars of
// the VIP's own instances check the caller's certificate identity
// (names.SPIFFE) on every request (xds/translate, the inbound route).
// Left out, any mesh identity may; an empty list lets nobody in. The
// plaintext <vip>.vip carries no identity and never reaches those
// sidecars, so allowed_callers does not apply to it: CallerNotes says so,
// and plaintext: false turns it off.

// MaxAllowedCallers bounds the services one policy may name.
const MaxAllowedCallers = 1000

// validCallers checks that every allowed caller is a service name, naming
// the first that is not by its index.
func (p Policy) validCallers() error {
	if p.AllowedCallers == nil {
		return nil
	}
	callers := *p.AllowedCallers
	if len(callers) > MaxAllowedCallers {
		return invalid("policy.allowed_callers", "%d services, at most %d allowed", len(callers), MaxAllowedCallers)
	}
	for i, c := range callers {
		if err := names.ValidateVIP(c); err != nil {
			reason := strings.TrimPrefix(err.Error(), names.ErrInvalidVIP.Error()+": ")
			return invalid(fmt.Sprintf("policy.allowed_callers[%d]", i),
				"%q is not a service name (%s); name each caller by its service's VIP, such as \"orders\"", c, reason)
		}
	}
	return nil
}

// normalCallers is a list of allowed callers sorted and without repeats,
// and never nil: the same set always reads the same.
func normalCallers(callers *[]string) *[]string {
	if callers == nil {
		return nil
	}
	out := slices.Compact(slices.Sorted(slices.Values(*callers)))
	if out == nil {
		out = []string{}
	}
	return &out
}

// AllowsAnyCaller reports whether every mesh identity may call the VIP.
func (p Policy) AllowsAnyCaller() bool { return p.AllowedCallers == nil }

// errNullCallers refuses allowed_callers: null. In YAML that is a key
// whose list was left empty (or whose last entry was deleted), which reads
// as "nobody" but would mean "any mesh identity".
var errNullCallers = &ValidationError{
	Field:   "policy.allowed_callers",
	Message: "null is neither a list nor left out; leave the field out to let any mesh identity call, or give [] to let nobody",
}

// callersJSON is allowed_callers on the wire: left out, or a list (null is
// refused: errNullCallers).
type callersJSON struct{ list *[]string }

// IsZero reports the field left out, for omitzero.
func (c callersJSON) IsZero() bool { return c.list == nil }

// MarshalJSON writes the list, [] for an empty one.
func (c callersJSON) MarshalJSON() ([]byte, error) {
	if c.list == nil || *c.list == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(*c.list)
}

// UnmarshalJSON reads a list of names; the names are checked by Validate.
func (c *callersJSON) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return errNullCallers
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	if list == nil {
		list = []string{}
	}
	c.list = &list
	return nil
}

// CallerNotes says, a sentence each, who may call a VIP and how: the
// services allowed over mutual TLS, and, while its plaintext cluster is
// served, that plaintext callers carry no identity. p need not be
// normalized.
func (p Policy) CallerNotes(vip string) []string {
	p = p.Normalize()
	secure, plain := names.Cluster(vip, true), names.Cluster(vip, false)
	var notes []string
	switch {
	case p.AllowsAnyCaller():
		notes = append(notes, fmt.Sprintf("allowed_callers: any service of the mesh, over mutual TLS (%s)", secure))
	case len(*p.AllowedCallers) == 0:
		notes = append(notes, fmt.Sprintf("allowed_callers: none; the sidecars of %s answer every caller of %s with 403", vip, secure))
	default:
		notes = append(notes, fmt.Sprintf("allowed_callers: %s, over mutual TLS (%s); the sidecars of %s answer other callers with 403",
			strings.Join(*p.AllowedCallers, ", "), secure, vip))
	}
	if p.PlaintextAllowed() {
		notes = append(notes, fmt.Sprintf("plaintext: %s carries no caller identity and goes to the instances directly, so allowed_callers does not apply to it; set plaintext: false to serve %s only",
			plain, secure))
	}
	return notes
}

// CallerWarning is what the owner of a VIP should be told when its policy
// names allowed callers yet serves the plaintext cluster, which carries no
// identity and so lets any client that reaches it past the list; "" for
// any other policy. p need not be normalized.
func (p Policy) CallerWarning(vip string) string {
	p = p.Normalize()
	if p.AllowsAnyCaller() || !p.PlaintextAllowed() {
		return ""
	}
	secure, plain := names.Cluster(vip, true), names.Cluster(vip, false)
	return fmt.Sprintf("allowed_callers applies to %s only: %s is served too (plaintext is not false), carries no caller identity and lets every caller in; set plaintext: false to serve %s only",
		secure, plain, secure)
}
