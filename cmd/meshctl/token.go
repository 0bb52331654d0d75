package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/token"
)

func (a *app) tokenCommand() *cobra.Command {
	group := &cobra.Command{
		Use:   "token",
		Short: "Issue the bearer tokens sidecars, instances and operators present to meshd",
		Long: `Tokens authenticate to meshd: a service token binds a sidecar's xDS stream
to one service (only such a stream receives its service's identity
certificate over SDS, which mutual-TLS .svip clusters need) and lets that
service manage its own instances on the REST API; an operator token may do
everything on the REST API.`,
		Example: `  meshctl token issue --service payments --ttl 720h
  meshctl token issue --role operator --name alice --out alice.token`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	group.AddCommand(a.tokenIssueCommand())
	return group
}

func (a *app) tokenIssueCommand() *cobra.Command {
	var (
		service, name, role, keyring, out string
		ttl                               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue (--service NAME | --role operator --name NAME) [--ttl 720h] [--keyring FILE] [--out FILE]",
		Short: "Sign a service token (sidecars, instances) or an operator token (people, tools)",
		Long: `Sign a bearer token. Tokens authenticate to both of meshd's listeners: in
gRPC initial metadata ("authorization: Bearer <token>") on xDS, in the
Authorization header on the REST API (meshctl --token-file, $MESHCTL_TOKEN).

--role service (the default) with --service NAME: the token of a service's
sidecars and instances. On xDS, meshd binds the stream to that service,
refuses a node claiming another, and serves it that service's identity
certificate (xspace/identity) and no other. On the REST API it may
register, renew, change the status of and deregister instances of VIP NAME
only, and read.

--role operator with --name NAME (a person or a tool, e.g. ci-deploy): may
do everything on the REST API (policies, any VIP's instances). Its xDS
streams are served clusters but never an identity certificate.

The token is signed with the first key of meshd's keyring file
(xds.token_keyring in meshd's config; <data_dir>/tokens.yaml by default,
created by meshd on first start; --keyring defaults to --data-dir's).
Holding that file is the authority to issue identities, so meshctl signs
locally instead of asking meshd over HTTP: run it where the keyring is, and
keep the file at mode 0600. Every meshd replica reading the same keyring
accepts the token.

The token goes to stdout, or with --out to FILE, created with mode 0600 (a
token is a credential). --out refuses to overwrite a file that others may
read.`,
		Example: `  meshctl token issue --service payments --out payments.token
  meshctl token issue --role operator --name alice --ttl 8h --out ~/.xspace/alice.token
  meshctl token issue --service payments --ttl 24h --keyring /etc/xspace/tokens.yaml > payments.token`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			r, subject, err := tokenSubject(role, service, name)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("keyring") {
				keyring = filepath.Join(a.conn.dataDir, "tokens.yaml")
			}
			kr, err := token.Load(keyring, nil)
			if err != nil {
				return err
			}
			tok, err := kr.IssueRole(r, subject, ttl)
			if err != nil {
				return err
			}
			claims, err := kr.Verify(tok)
			if err != nil {
				return err
			}
			doc := tokenOutput{
				Role: string(claims.Role), Subject: claims.Subject, Service: claims.Service, Token: tok,
				ExpiresAt: claims.Expires, KeyID: claims.KeyID,
			}
			if out == "" {
				return a.emit(doc, func(w io.Writer) { fmt.Fprintln(w, tok) })
			}
			if err := writeSecretFile(out, []byte(tok+"\n")); err != nil {
				return err
			}
			doc.Token, doc.File = "", out
			return a.emit(doc, func(w io.Writer) {
				fmt.Fprintf(w, "%s token for %s written to %s (mode 0600), valid until %s\n",
					claims.Role, claims.Subject, out, claims.Expires.UTC().Format(time.RFC3339))
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", string(token.RoleService), "role of the token: service or operator")
	f.StringVar(&service, "service", "", "service a service token is for")
	f.StringVar(&name, "name", "", "person or tool an operator token is for")
	f.DurationVar(&ttl, "ttl", 30*24*time.Hour, "how long the token is valid")
	f.StringVar(&keyring, "keyring", defaultKeyring, "meshd's token keyring file (default: --data-dir's tokens.yaml)")
	f.StringVar(&out, "out", "", "write the token to this file, mode 0600, instead of stdout")
	return cmd
}

// tokenSubject checks that the flags name the token's subject the way its
// role wants it.
func tokenSubject(role, service, name string) (token.Role, string, error) {
	r, err := token.ParseRole(role)
	if err != nil {
		return "", "", usageError{"--role: " + err.Error()}
	}
	switch {
	case r == token.RoleService && name != "":
		return "", "", usageError{"--name names an operator; a service token takes --service NAME"}
	case r == token.RoleService && service == "":
		return "", "", usageError{"--service is required: the service the token is for, such as payments (or --role operator --name NAME)"}
	case r == token.RoleOperator && service != "":
		return "", "", usageError{"--service names a service; an operator token takes --name NAME (a person or tool)"}
	case r == token.RoleOperator && name == "":
		return "", "", usageError{"--name is required with --role operator: the person or tool the token is for, such as alice"}
	case r == token.RoleService:
		return r, service, nil
	}
	return r, name, nil
}

// writeSecretFile writes a credential to path with mode 0600, through a
// temporary file renamed over it, so no reader ever sees a partial token.
// An existing file others may read is refused, not silently tightened: it
// may have leaked already.
func writeSecretFile(path string, b []byte) error {
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("--out %s is not a regular file", path)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("--out %s exists with mode %#o, readable by others; remove it or chmod 600 it first", path, fi.Mode().Perm())
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("--out: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

type tokenOutput struct {
	Role      string    `json:"role"`
	Subject   string    `json:"subject"`
	Service   string    `json:"service,omitempty"`
	Token     string    `json:"token,omitempty"`
	File      string    `json:"file,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	KeyID     string    `json:"key_id"`
}
