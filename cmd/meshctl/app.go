package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/buildinfo"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the server refused, or could not be reached
	exitUsage   = 2 // the command line is wrong
)

const (
	serverEnv     = "MESHCTL_SERVER"
	defaultServer = "http://127.0.0.1:18080"
)

var outputs = []string{"table", "json", "yaml"}

// app is one invocation of meshctl: its global flags and streams.
type app struct {
	server  string
	output  string
	timeout time.Duration
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	conn    conn
}

// run executes meshctl with args and returns its exit code. ctx ends
// long-running commands (instance register --heartbeat) the way SIGINT does.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	var fail *failure
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errChecksFailed):
		return exitFailure // the report says which
	case errors.As(err, &fail):
		fmt.Fprintln(stderr, a.explain(fail.err))
		return exitFailure
	default:
		fmt.Fprintf(stderr, "meshctl: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
		return exitUsage
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "Manage VIPs and instances of xspace-mesh and inspect its control plane",
		Long: `meshctl talks to meshd, the xspace-mesh control plane, over its REST API.

Service owners apply a VIP's policy (protocol, load balancing, retries,
timeouts, circuit breakers, outlier detection) and register instances;
platform engineers list the proxies connected to the control plane and the
VIPs it watches.

The server is --server, else $MESHCTL_SERVER, else ` + defaultServer + `.
Requests carry the bearer token in --token-file, else $MESHCTL_TOKEN (issue
one with meshctl token issue; reads need one unless meshd allows them open,
writes need an operator token or the service token of the VIP written to).
An https server is trusted with --ca-file; without it, a server on this
machine is trusted with the embedded CA of meshd's data directory
(--data-dir/ca/ca.crt, when that file exists), any other with the system's
roots.
Errors from the server are printed as it wrote them, on stderr, with exit
code 1; a wrong command line exits with code 2.`,
		Example: `  meshctl vip apply -f payments.yaml
  meshctl instance register payments --address 10.0.0.12 --port 8080 --heartbeat
  meshctl instance list payments -o yaml
  MESHCTL_SERVER=https://meshd.internal:18080 meshctl proxies --ca-file ca.crt --token-file ops.token`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: a.checkGlobals,
	}
	server := os.Getenv(serverEnv)
	if server == "" {
		server = defaultServer
	}
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", server, "base URL of meshd's API; $"+serverEnv+" sets the default")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit of each request to the server")
	f.StringVar(&a.conn.tokenFile, "token-file", "", "file holding the bearer token sent to meshd; $"+tokenEnv+" holds the token itself")
	f.StringVar(&a.conn.caFile, "ca-file", os.Getenv(caFileEnv), "PEM bundle trusted for an https server; $"+caFileEnv+" sets the default")
	dataDir := os.Getenv(dataDirEnv)
	if dataDir == "" {
		dataDir = defaultDataDir
	}
	f.StringVar(&a.conn.dataDir, "data-dir", dataDir, "data directory of a local meshd, whose ca/ca.crt is trusted for https://127.0.0.1 without --ca-file; $"+dataDirEnv+" sets the default")
	root.SetFlagErrorFunc(flagError)
	root.Version = buildinfo.Get().String("meshctl")
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(a.vipCommand(), a.instanceCommand(), a.proxiesCommand(), a.proxyStatusCommand(), a.resolveCommand(), a.checkCommand(), a.tokenCommand(),
		a.bootstrapCommand())
	return root
}

// checkGlobals validates the global flags before any command runs.
func (a *app) checkGlobals(*cobra.Command, []string) error {
	if !slices.Contains(outputs, a.output) {
		return usageError{fmt.Sprintf("--output %q: use table, json or yaml", a.output)}
	}
	if a.timeout <= 0 {
		return usageError{fmt.Sprintf("--timeout %s: use a positive duration such as 10s", a.timeout)}
	}
	u, err := url.Parse(a.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Sprintf("--server %q: use a URL such as %s", a.server, defaultServer)}
	}
	if err := a.connect(); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// usageError is a mistake on the command line; meshctl exits with code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// failure is an error met while carrying out a well-formed command; meshctl
// exits with code 1.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// groupRun is the body of a command that only groups subcommands: alone it
// prints its help; with an argument it is a usage error, not silent help.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only on the root
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return usageError{msg}
	}
	return cmd.Help()
}

// flagError is a wrong flag, with the nearest flag of the command when the
// flag is unknown, as cobra suggests commands.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	name, unknown := strings.CutPrefix(msg, "unknown flag: --")
	if !unknown {
		return usageError{msg}
	}
	var flags []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { flags = append(flags, f.Name) })
	if best := api.Nearest(name, flags); best != "" {
		msg += "\n\nDid you mean this?\n\t--" + best
	}
	return usageError{msg}
}

// runE adapts a command body: its usage errors stay usage errors, anything
// else becomes a failure.
func runE(body func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := body(cmd, args)
		var usage usageError
		if err == nil || errors.As(err, &usage) {
			return err
		}
		return &failure{err}
	}
}

// explain returns the text printed for a failure: the server's own words
// when it answered, a hint when it could not be reached.
func (a *app) explain(err error) string {
	if j, ok := err.(interface{ Unwrap() []error }); ok { // every bad document of a file
		parts := []string{}
		for _, e := range j.Unwrap() {
			parts = append(parts, a.explain(e))
		}
		return strings.Join(parts, "\n")
	}
	var apiErr *api.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Message, "HTTP request to an HTTPS server"):
		return apiErr.Error() + "\nmeshd serves TLS: use --server " + strings.Replace(a.server, "http://", "https://", 1)
	case errors.As(err, &apiErr):
		return err.Error() // the server's words, after what meshctl was doing
	case errors.As(err, &urlErr) && a.tlsHint(err) != "":
		return fmt.Sprintf("meshctl: %s: %v\n%s", a.server, urlErr.Err, a.tlsHint(err))
	case errors.As(err, &urlErr) && urlErr.Timeout():
		return fmt.Sprintf("meshctl: %s did not answer within --timeout %s", a.server, a.timeout)
	case errors.As(err, &urlErr):
		return fmt.Sprintf("meshctl: cannot reach %s: %v; is meshd running? Set --server or $%s", a.server, urlErr.Err, serverEnv)
	}
	return "meshctl: " + err.Error()
}
