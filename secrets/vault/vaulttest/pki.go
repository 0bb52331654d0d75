package vaulttest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/prisma-systems/xspace-mesh/names"
)

// PKIOptions shape the PKI that SetupPKI creates.
type PKIOptions struct {
	// Mount of the root CA; default "pki".
	Mount string
	// Role to create on the issuing mount; default "mesh".
	Role string
	// TTL is the role's certificate TTL (also its max TTL); default 1h.
	TTL time.Duration
	// Intermediate issues from an intermediate CA at "<Mount>_int",
	// signed by the root at Mount.
	Intermediate bool
}

// PKI is what SetupPKI created.
type PKI struct {
	// Mount issues the certificates: the root's, or the intermediate's.
	Mount string
	Role  string
	// RootMount holds the root CA.
	RootMount string
}

// SetupPKI creates, through c (a root token), the PKI meshd expects: an EC
// P-256 root (and optionally an intermediate) and a role that issues
// SPIFFE-only certificates of the mesh, server and client, with a short TTL.
func SetupPKI(tb testing.TB, c *api.Client, o PKIOptions) PKI {
	tb.Helper()
	if o.Mount == "" {
		o.Mount = "pki"
	}
	if o.Role == "" {
		o.Role = "mesh"
	}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	p := PKI{Mount: o.Mount, Role: o.Role, RootMount: o.Mount}
	mount(tb, c, o.Mount)
	write(tb, c, o.Mount+"/root/generate/internal", map[string]any{
		"common_name": "xspace test root", "key_type": "ec", "key_bits": 256, "ttl": "87600h",
	})
	if o.Intermediate {
		p.Mount = o.Mount + "_int"
		mount(tb, c, p.Mount)
		csr := write(tb, c, p.Mount+"/intermediate/generate/internal", map[string]any{
			"common_name": "xspace test intermediate", "key_type": "ec", "key_bits": 256,
		}).Data["csr"]
		signed := write(tb, c, o.Mount+"/root/sign-intermediate", map[string]any{
			"csr": csr, "format": "pem", "ttl": "43800h",
		}).Data
		bundle := fmt.Sprintf("%s\n%s", signed["certificate"], signed["issuing_ca"])
		write(tb, c, p.Mount+"/intermediate/set-signed", map[string]any{"certificate": bundle})
	}
	WriteRole(tb, c, p.Mount, o.Role, o.TTL)
	return p
}

// WriteRole creates or replaces a PKI role issuing mesh certificates: URI
// SANs under names.SPIFFE("*") only, no CN required, server and client.
func WriteRole(tb testing.TB, c *api.Client, mount, role string, ttl time.Duration) {
	tb.Helper()
	secs := fmt.Sprintf("%ds", int(ttl/time.Second))
	write(tb, c, mount+"/roles/"+role, map[string]any{
		"allowed_uri_sans": names.SPIFFE("*"),
		"require_cn":       false,
		"server_flag":      true,
		"client_flag":      true,
		"key_type":         "ec",
		"key_bits":         256,
		"ttl":              secs,
		"max_ttl":          secs,
		"no_store":         true,
	})
}

// WriteServerRole creates or replaces a PKI role issuing meshd's serving
// certificate: localhost and IP SANs, the control plane's URI SAN.
func WriteServerRole(tb testing.TB, c *api.Client, mount, role string, ttl time.Duration) {
	tb.Helper()
	secs := fmt.Sprintf("%ds", int(ttl/time.Second))
	write(tb, c, mount+"/roles/"+role, map[string]any{
		"allowed_domains":    "localhost",
		"allow_bare_domains": true,
		"allow_localhost":    true,
		"allow_ip_sans":      true,
		"allowed_uri_sans":   names.SPIFFE(names.ControlPlane),
		"require_cn":         false,
		"server_flag":        true,
		"client_flag":        false,
		"key_type":           "ec",
		"key_bits":           256,
		"ttl":                secs,
		"max_ttl":            secs,
		"no_store":           true,
	})
}

// IssuePolicy is an HCL policy that allows issuing from mount's role and
// reading its CA chain, and nothing else.
func IssuePolicy(mount, role string) string {
	return strings.Join([]string{
		fmt.Sprintf("path %q { capabilities = [\"update\"] }", mount+"/issue/"+role),
		fmt.Sprintf("path %q { capabilities = [\"read\"] }", mount+"/cert/ca_chain"),
	}, "\n")
}

// WritePolicy creates or replaces an ACL policy.
func WritePolicy(tb testing.TB, c *api.Client, name, hcl string) {
	tb.Helper()
	if err := c.Sys().PutPolicy(name, hcl); err != nil {
		tb.Fatalf("vault: write policy %s: %v", name, err)
	}
}

func mount(tb testing.TB, c *api.Client, path string) {
	tb.Helper()
	err := c.Sys().Mount(path, &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}})
	if err != nil {
		tb.Fatalf("vault: mount pki at %s: %v", path, err)
	}
}

func write(tb testing.TB, c *api.Client, path string, data map[string]any) *api.Secret {
	tb.Helper()
	s, err := c.Logical().Write(path, data)
	if err != nil {
		tb.Fatalf("vault: write %s: %v", path, err)
	}
	if s == nil {
		s = &api.Secret{}
	}
	return s
}
