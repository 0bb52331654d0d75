package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/buildinfo"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

// Results of one check.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
	checkSkip = "skip"
)

// checkResult is one line of meshctl check.
type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// checkReport is meshctl check's -o json|yaml.
type checkReport struct {
	Server  string        `json:"server"`
	OK      bool          `json:"ok"`
	Results []checkResult `json:"results"`
}

// A root CA expiring sooner than this is a warning.
const expiryWarning = 30 * 24 * time.Hour

func (a *app) checkCommand() *cobra.Command {
	var keyring string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check a deployment in one command: meshd, registry, certificates, tokens, versions",
		Long: `Check the meshd named by --server and what meshctl can see of it from here,
in order:

  reachable     /healthz answers (nothing else is checked if not)
  ready         /readyz, and each of its checks (registry, secrets, xds, ...)
  access        the token (--token-file, $MESHCTL_TOKEN) is accepted
  xds           meshd's xDS address answers a stream, with TLS and the token
  certificates  identity certificates meshd holds: failures, near expiry
  serving-tls   meshd's serving certificate (https only): expiry
  local-ca      the embedded CA of --data-dir, when on this machine: expiry,
                ca.key readable by its owner only
  keyring       the token keyring (--keyring, else --data-dir's), when on
                this machine: readable by its owner only
  version       meshctl's and meshd's versions are the same

Each line is ok, warn, fail or skip (not applicable from here). The exit
code is 1 if any check failed, else 0, so a deployment script can run it;
warnings (the CA expiring within 30 days, the serving certificate with a
tenth of its life left, meshd's certificate source failing to renew one,
different versions) do not fail it.`,
		Example: `  meshctl check
  meshctl check --server https://meshd.internal:18080 --ca-file ca.crt --token-file ops.token
  meshctl check -o json | jq '.results[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("keyring") {
				keyring = filepath.Join(a.conn.dataDir, "tokens.yaml")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*a.timeout)
			defer cancel()
			rep := checkReport{Server: a.server, Results: a.runChecks(ctx, keyring)}
			rep.OK = !slices.ContainsFunc(rep.Results, func(r checkResult) bool { return r.Status == checkFail })
			if err := a.emit(rep, checkTable(rep)); err != nil {
				return err
			}
			if !rep.OK {
				return errChecksFailed
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&keyring, "keyring", defaultKeyring, "meshd's token keyring file (default: --data-dir's tokens.yaml)")
	return cmd
}

// errChecksFailed ends meshctl check with exit code 1 once the report is out.
var errChecksFailed = errors.New("some checks failed")

func checkTable(rep checkReport) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "CHECK", "STATUS", "DETAIL")
		for _, r := range rep.Results {
			row(w, r.Check, strings.ToUpper(r.Status), r.Detail)
		}
	}
}

// runChecks runs every check in order; the first failing to reach meshd
// stops those that need it.
func (a *app) runChecks(ctx context.Context, keyring string) []checkResult {
	var out []checkResult
	add := func(check, status, format string, args ...any) {
		out = append(out, checkResult{Check: check, Status: status, Detail: fmt.Sprintf(format, args...)})
	}
	c := a.client()
	if err := c.Health(ctx); err != nil {
		add("reachable", checkFail, "%s", a.explain(err))
		return append(out, a.localChecks(keyring)...)
	}
	add("reachable", checkOK, "%s answers", a.server)
	if rd, err := c.Readiness(ctx); err != nil {
		add("ready", checkFail, "%s", a.explain(err))
	} else {
		add("ready", map[bool]string{true: checkOK, false: checkFail}[rd.Ready], "ready: %t", rd.Ready)
		for _, name := range slices.Sorted(maps.Keys(rd.Checks)) {
			ch := rd.Checks[name]
			detail := strings.TrimSpace(string(ch.Detail))
			add("ready/"+name, map[bool]string{true: checkOK, false: checkFail}[ch.OK], "%s", orDash(detail))
		}
	}
	info, infoErr := c.Info(ctx)
	if infoErr != nil {
		add("access", checkFail, "%s", a.explain(infoErr))
	} else {
		add("access", checkOK, "the debug endpoints answer %s", tokenWho(a.conn.token))
		out = append(out, a.checkXDS(ctx, info))
	}
	out = append(out, a.checkCertificates(ctx)...)
	out = append(out, a.checkServingTLS())
	out = append(out, a.localChecks(keyring)...)
	switch mine := buildinfo.Get(); {
	case infoErr != nil:
		add("version", checkSkip, "meshd's version is unknown: /debug/info did not answer")
	case !mine.Known() || info.Version == buildinfo.Unknown:
		add("version", checkSkip, "meshctl %s, meshd %s (revision %s): a build without a version", mine.Version, info.Version, info.Revision)
	case mine.Version != info.Version:
		add("version", checkWarn, "meshctl %s, meshd %s: use the meshctl of meshd's release", mine.Version, info.Version)
	default:
		add("version", checkOK, "meshctl and meshd are both %s", mine.Version)
	}
	return out
}

func tokenWho(tok string) string {
	if tok == "" {
		return "without a token"
	}
	return "to the token"
}

// checkXDS opens a stream to meshd's xDS address, as resolve does, and asks
// for a name that does not exist: an answer proves the listener, TLS and
// the token.
func (a *app) checkXDS(ctx context.Context, info api.ServerInfo) checkResult {
	r := checkResult{Check: "xds"}
	addr, err := a.xdsAddress(ctx, os.Getenv(xdsEnv))
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		return r
	}
	conn, err := a.dialXDS(addr)
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		return r
	}
	defer func() { _ = conn.Close() }()
	_, err = probe.Resolve(ctx, conn, &corev3.Node{Id: "meshctl-check", Cluster: a.tokenService("meshctl")}, "xspace-meshctl-check.vip")
	switch {
	case errors.Is(err, probe.ErrNotFound):
		r.Status, r.Detail = checkOK, "a stream to "+addr+" is answered"
	case err == nil:
		r.Status, r.Detail = checkOK, "a stream to "+addr+" is answered"
	default:
		r.Status, r.Detail = checkFail, fmt.Sprintf("%s (meshd reports xDS at %s): %v", addr, info.XDSAddress, err)
		if h := a.tlsHint(err); h != "" {
			r.Detail += "; " + h
		}
	}
	return r
}

// checkCertificates reports the identity certificates meshd holds.
func (a *app) checkCertificates(ctx context.Context) []checkResult {
	certs, err := a.client().Certificates(ctx)
	if err != nil {
		return []checkResult{{Check: "certificates", Status: checkFail, Detail: a.explain(err)}}
	}
	if len(certs) == 0 {
		return []checkResult{{Check: "certificates", Status: checkOK, Detail: "none held yet (one is issued when a proxy of a service first asks)"}}
	}
	var out []checkResult
	for _, c := range certs {
		r := checkResult{Check: "certificates/" + c.Service, Status: checkOK, Detail: "expires " + c.NotAfter.UTC().Format(time.RFC3339)}
		switch {
		case c.LastError != "":
			r.Status, r.Detail = checkFail, fmt.Sprintf("%d failures, last: %s", c.Failures, c.LastError)
		case !c.NotAfter.IsZero() && time.Now().After(c.NotAfter):
			r.Status, r.Detail = checkFail, "expired at "+c.NotAfter.UTC().Format(time.RFC3339)
		case c.NearExpiry:
			r.Status, r.Detail = checkWarn, "near expiry, renewal pending: "+r.Detail
		}
		out = append(out, r)
	}
	return out
}

// checkServingTLS reports the expiry of the certificate an https meshd
// presents.
func (a *app) checkServingTLS() checkResult {
	r := checkResult{Check: "serving-tls", Status: checkSkip, Detail: "meshd serves plain http (loopback only)"}
	u, _ := url.Parse(a.server) // checked by checkGlobals
	if u.Scheme != "https" {
		return r
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if a.conn.trust != "" {
		pemBytes, err := os.ReadFile(a.conn.trust)
		if err != nil {
			r.Status, r.Detail = checkFail, err.Error()
			return r
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pemBytes)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: a.timeout}, "tcp", host, cfg)
	if err != nil {
		r.Status, r.Detail = checkFail, err.Error()
		if h := a.tlsHint(err); h != "" {
			r.Detail += "; " + h
		}
		return r
	}
	defer func() { _ = conn.Close() }()
	// meshd renews it well before it expires: a tenth of its lifetime left
	// means renewals are failing.
	c := conn.ConnectionState().PeerCertificates[0]
	return expiryResult("serving-tls", c, c.NotAfter.Sub(c.NotBefore)/10, "meshd is not renewing it: see meshd's log and ready/secrets")
}

// expiryResult is ok for a certificate with more than warn left.
func expiryResult(check string, c *x509.Certificate, warn time.Duration, advice string) checkResult {
	r := checkResult{Check: check, Status: checkOK, Detail: "expires " + c.NotAfter.UTC().Format(time.RFC3339)}
	switch left := time.Until(c.NotAfter); {
	case left <= 0:
		r.Status, r.Detail = checkFail, "expired at "+c.NotAfter.UTC().Format(time.RFC3339)+": "+advice
	case left < warn:
		r.Status, r.Detail = checkWarn, fmt.Sprintf("%s, in %s: %s", r.Detail, left.Round(time.Minute), advice)
	}
	return r
}

// localChecks look at meshd's files when they are on this machine: the
// embedded CA of --data-dir and the token keyring.
func (a *app) localChecks(keyring string) []checkResult {
	dir := filepath.Join(a.conn.dataDir, "ca")
	ca := checkResult{Check: "local-ca", Status: checkSkip, Detail: "no embedded CA at " + dir + " (another machine, or Vault)"}
	if b, err := os.ReadFile(filepath.Join(dir, embedded.CertFile)); err == nil {
		ca = caResult(b)
		if ca.Status != checkFail {
			if r := privateFile("local-ca", filepath.Join(dir, embedded.KeyFile)); r.Status == checkFail {
				ca = r
			}
		}
	}
	kr := privateFile("keyring", keyring)
	return []checkResult{ca, kr}
}

func caResult(b []byte) checkResult {
	block, _ := pem.Decode(b)
	if block == nil {
		return checkResult{Check: "local-ca", Status: checkFail, Detail: "ca.crt holds no PEM certificate"}
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return checkResult{Check: "local-ca", Status: checkFail, Detail: "ca.crt: " + err.Error()}
	}
	return expiryResult("local-ca", c, expiryWarning, `rotate the CA (README, "Security")`)
}

// privateFile checks that a file holding keys is readable by its owner
// only; a file that is not here is skipped.
func privateFile(check, path string) checkResult {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return checkResult{Check: check, Status: checkSkip, Detail: "no " + path + " on this machine"}
	case err != nil:
		return checkResult{Check: check, Status: checkFail, Detail: err.Error()}
	case fi.Mode().Perm()&0o077 != 0:
		return checkResult{Check: check, Status: checkFail, Detail: fmt.Sprintf("%s has mode %#o: others may read the keys; chmod 600 %s", path, fi.Mode().Perm(), path)}
	}
	return checkResult{Check: check, Status: checkOK, Detail: fmt.Sprintf("%s has mode %#o", path, fi.Mode().Perm())}
}
