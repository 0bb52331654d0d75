package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

func (a *app) vipCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vip",
		Short: "Apply, show and delete VIPs and their policy",
		Long: `A VIP is a named service ("payments") and the policy every sidecar applies
when calling it: protocol, load balancing, retries, timeouts, circuit breakers,
outlier detection, and whether the plaintext cluster payments.vip is served
beside the mutual-TLS payments.svip. Fields left out take the defaults, and the
server always answers with the policy in force.`,
		Example: `  meshctl vip apply -f payments.yaml
  meshctl vip get payments -o yaml
  meshctl vip list
  meshctl vip stats`,
		RunE: groupRun,
	}
	cmd.AddCommand(a.vipApplyCommand(), a.vipGetCommand(), a.vipListCommand(), a.vipDeleteCommand(), a.vipStatsCommand())
	return cmd
}

func (a *app) vipApplyCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace VIPs from a YAML or JSON file",
		Long: `Create or replace each VIP in FILE ("-" reads stdin). The file holds one VIP
document, or several separated by "---" lines, each naming its VIP in "name".
JSON documents are sent as JSON, others as YAML; the server checks them
strictly, so a misspelt field is refused rather than ignored. Applying is
idempotent: it prints "created" for a new VIP and "configured" otherwise.
With -o json or yaml it prints the stored policies instead.`,
		Example: `  cat > payments.yaml <<EOF
  name: payments
  policy:
    protocol: grpc
    load_balancing: least_request
    timeouts: {connect: 250ms, request: 3s}
    retries: {attempts: 3, "on": [connect-failure, unavailable]}
  EOF
  meshctl vip apply -f payments.yaml
  meshctl vip get payments -o yaml | meshctl vip apply -f -`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			docs, err := a.readDocuments(file)
			if err != nil {
				return err
			}
			return a.applyVIPs(cmd, file, docs)
		}),
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file holding the VIPs, "-" for stdin (required)`)
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func (a *app) readDocuments(file string) ([][]byte, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(a.stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	docs := splitDocuments(b)
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s holds no VIP; write one such as \"name: payments\"", file)
	}
	return docs, nil
}

func (a *app) applyVIPs(cmd *cobra.Command, file string, docs [][]byte) error {
	var stored []registry.VIP
	for n, doc := range docs {
		where := file
		if len(docs) > 1 {
			where = fmt.Sprintf("%s, document %d", file, n+1)
		}
		name, err := vipName(doc)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		v, created, err := a.client().ApplyVIP(cmd.Context(), name, contentType(doc), doc)
		if err != nil {
			if len(docs) > 1 {
				return fmt.Errorf("%s: %w", where, err)
			}
			return err
		}
		stored = append(stored, v)
		a.printCallerWarning(v)
		if a.output == "table" {
			fmt.Fprintf(a.stdout, "vip/%s %s\n", v.Name, map[bool]string{true: "created", false: "configured"}[created])
			a.printProxylessNotes(v.Policy)
		}
	}
	if a.output == "table" {
		return nil
	}
	if len(stored) == 1 {
		return a.emit(stored[0], nil)
	}
	return a.emit(stored, nil)
}

// splitDocuments splits a YAML stream at "---" lines and drops empty documents.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur))) > 0 {
			docs = append(docs, cur)
		}
		cur = nil
	}
	for line := range bytes.Lines(b) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// vipName reads the name a VIP document gives itself, for the URL; the server
// checks the rest.
func vipName(doc []byte) (string, error) {
	var head struct {
		Name string `json:"name"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return "", fmt.Errorf("not a YAML or JSON VIP: %w", err)
	}
	if head.Name == "" {
		return "", fmt.Errorf("the VIP has no name; add one, such as \"name: payments\"")
	}
	return head.Name, nil
}

func contentType(doc []byte) string {
	if t := bytes.TrimSpace(doc); len(t) > 0 && t[0] == '{' {
		return "application/json"
	}
	return "application/yaml"
}

func (a *app) vipGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a VIP's policy in force",
		Long: `Show the policy in force for VIP NAME, defaults filled in. -o yaml prints a
document that "meshctl vip apply -f" accepts back. For a grpc VIP, the table
is followed by what proxyless gRPC clients get where they lack what the
policy asks for (they are served the nearest thing they have).`,
		Example: `  meshctl vip get payments
  meshctl vip get payments -o yaml > payments.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			v, err := a.client().GetVIP(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := a.emit(v, vipTable([]registry.VIP{v})); err != nil {
				return err
			}
			a.printCallerWarning(v)
			if a.output == "table" {
				a.printProxylessNotes(v.Policy)
			}
			return nil
		}),
	}
}

// printCallerWarning tells the owner of a VIP, on stderr, that its
// plaintext cluster lets callers past its allowed_callers
// (registry.Policy.CallerWarning).
func (a *app) printCallerWarning(v registry.VIP) {
	if w := v.Policy.CallerWarning(v.Name); w != "" {
		fmt.Fprintf(a.stderr, "warning: vip/%s: %s\n", v.Name, w)
	}
}

// printProxylessNotes prints, under a VIP, what proxyless gRPC clients get
// instead of what its policy asks (registry.Policy.ProxylessNotes).
func (a *app) printProxylessNotes(p registry.Policy) {
	notes := p.ProxylessNotes()
	if len(notes) == 0 {
		return
	}
	fmt.Fprintln(a.stdout, "  proxyless gRPC clients:")
	for _, n := range notes {
		fmt.Fprintf(a.stdout, "    %s\n", n)
	}
}

func (a *app) vipListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every VIP and its main policy settings",
		Long:    `List every VIP in the registry, sorted by name, with the main settings of its policy.`,
		Example: `  meshctl vip list
  meshctl vip list -o json | jq -r '.[].name'`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			vips, err := a.client().ListVIPs(cmd.Context())
			if err != nil {
				return err
			}
			if vips == nil {
				vips = []registry.VIP{}
			}
			return a.emit(vips, vipTable(vips))
		}),
	}
}

func (a *app) vipDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a VIP that has no instances left",
		Long: `Delete VIP NAME and its policy. The server refuses while instances are still
registered: deregister them first (meshctl instance list NAME).`,
		Example: `  meshctl vip delete payments`,
		Args:    cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := a.client().DeleteVIP(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "vip/%s deleted\n", args[0])
			return nil
		}),
	}
}

func (a *app) vipStatsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats [NAME...]",
		Short: "Show the control plane's view of VIPs: instances, subscribers, watches",
		Long: `Show, for each VIP the control plane knows, how many instances it has, how
many of them are routable (UP), how many connected proxies hold one of its
clusters, and whether discovery is watching it in the registry. Name VIPs to
show only those. It reads meshd's debug endpoint ` + api.VIPStatsPath + `: use it to
answer "does the control plane see my instances, and does any proxy use them?"`,
		Example: `  meshctl vip stats
  meshctl vip stats payments orders -o json`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			stats, err := a.client().VIPStats(cmd.Context())
			if err != nil {
				return err
			}
			shown := []api.VIPStat{}
			for _, s := range stats {
				if len(args) == 0 || slices.Contains(args, s.Name) {
					shown = append(shown, s)
				}
			}
			return a.emit(shown, vipStatTable(shown))
		}),
	}
}
