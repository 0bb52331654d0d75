package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

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
	cmd.AddCommand(a.vipApplyCommand(), a.vipDiffCommand(), a.vipGetCommand(), a.vipListCommand(), a.vipDeleteCommand(), a.vipStatsCommand())
	return cmd
}

func (a *app) vipApplyCommand() *cobra.Command {
	var (
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--dry-run]",
		Short: "Create or replace VIPs from a YAML or JSON file",
		Long: `Create or replace each VIP in FILE ("-" reads stdin). The file holds one VIP
document, or several separated by "---" lines, each naming its VIP in "name".
Every document is checked first, the way the server checks it (a misspelt
field is refused rather than ignored), and nothing is applied unless all of
them are valid: a file is applied whole or not at all, up to the server
refusing one (a token without the right, the registry unavailable), which
stops the rest. JSON documents are sent as JSON, others as YAML. Applying is
idempotent: it prints "created" for a new VIP, "configured" for a changed
one and "unchanged" otherwise. With -o json or yaml it prints the stored
policies instead.

--dry-run checks the file and says what applying it would do, changing
nothing; meshctl vip diff shows the changes field by field.`,
		Example: `  cat > payments.yaml <<EOF
  name: payments
  policy:
    protocol: grpc
    load_balancing: least_request
    timeouts: {connect: 250ms, request: 3s}
    retries: {attempts: 3, "on": [connect-failure, unavailable]}
  EOF
  meshctl vip apply -f payments.yaml --dry-run
  meshctl vip apply -f payments.yaml
  meshctl vip get payments -o yaml | meshctl vip apply -f -`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			docs, err := a.readVIPDocuments(file)
			if err != nil {
				return err
			}
			if dryRun {
				return a.planVIPs(cmd, docs)
			}
			return a.applyVIPs(cmd, docs)
		}),
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file holding the VIPs, "-" for stdin (required)`)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the file and say what applying it would change, changing nothing")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// vipDocument is one document of a VIP file, checked.
type vipDocument struct {
	where string // the file, and the document's number if it has several
	doc   []byte
	vip   registry.VIP // as the store would keep it
}

// readVIPDocuments reads a VIP file and checks every document the way the
// server would, reporting every bad one.
func (a *app) readVIPDocuments(file string) ([]vipDocument, error) {
	docs, err := a.readDocuments(file)
	if err != nil {
		return nil, err
	}
	out := make([]vipDocument, 0, len(docs))
	var errs []error
	for n, doc := range docs {
		d := vipDocument{where: file, doc: doc}
		if len(docs) > 1 {
			d.where = fmt.Sprintf("%s, document %d", file, n+1)
		}
		name, err := vipName(doc)
		if err == nil {
			d.vip, err = api.CheckVIP(name, contentType(doc), doc)
		}
		if err != nil && len(docs) == 1 {
			return nil, err // the server's words, as apply would print them
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.where, err))
			continue
		}
		out = append(out, d)
	}
	if len(errs) > 0 {
		if len(docs) > 1 {
			errs = append(errs, fmt.Errorf("nothing was applied: %d of %d documents are invalid", len(errs), len(docs)))
		}
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func (a *app) applyVIPs(cmd *cobra.Command, docs []vipDocument) error {
	stored := make([]registry.VIP, 0, len(docs))
	for _, d := range docs {
		before, found, err := a.currentVIP(cmd, d.vip.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", d.where, err)
		}
		v, created, err := a.client().ApplyVIP(cmd.Context(), d.vip.Name, contentType(d.doc), d.doc)
		if err != nil {
			if len(docs) > 1 {
				return fmt.Errorf("%s: %w", d.where, err)
			}
			return err
		}
		stored = append(stored, v)
		a.printCallerWarning(v)
		if a.output == "table" {
			fmt.Fprintf(a.stdout, "vip/%s %s\n", v.Name, applyVerb(created || !found, found && before.Policy.Equal(v.Policy), false))
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

// currentVIP returns the VIP as stored, and whether it exists.
func (a *app) currentVIP(cmd *cobra.Command, name string) (registry.VIP, bool, error) {
	v, err := a.client().GetVIP(cmd.Context(), name)
	var apiErr *api.Error
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return registry.VIP{}, false, nil
	}
	return v, err == nil, err
}

func applyVerb(created, unchanged, dryRun bool) string {
	verb := "configured"
	switch {
	case created:
		verb = "created"
	case unchanged:
		verb = "unchanged"
	}
	if dryRun && verb != "unchanged" {
		verb = "would be " + verb
	}
	return verb
}

// vipPlan is what applying one document would do.
type vipPlan struct {
	Name   string       `json:"name"`
	Action string       `json:"action"` // create, configure or none
	Policy registry.VIP `json:"vip"`
}

// planVIPs says what applying docs would do, changing nothing.
func (a *app) planVIPs(cmd *cobra.Command, docs []vipDocument) error {
	plans := make([]vipPlan, 0, len(docs))
	for _, d := range docs {
		cur, found, err := a.currentVIP(cmd, d.vip.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", d.where, err)
		}
		p := vipPlan{Name: d.vip.Name, Action: "configure", Policy: d.vip}
		switch {
		case !found:
			p.Action = "create"
		case cur.Policy.Equal(d.vip.Policy):
			p.Action = "none"
		}
		plans = append(plans, p)
	}
	return a.emit(plans, func(w io.Writer) {
		for _, p := range plans {
			fmt.Fprintf(w, "vip/%s %s (dry run)\n", p.Name, applyVerb(p.Action == "create", p.Action == "none", true))
		}
	})
}

func (a *app) vipDiffCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show what vip apply would change, field by field",
		Long: `Compare each VIP in FILE ("-" reads stdin) with the policy in force, both
with defaults filled in as the server keeps them, and print the differences
as a unified diff of their YAML ("-" in force, "+" after apply). A VIP that
does not exist yet is all "+". Every document is checked first, as vip apply
does. Nothing is changed. -o json or yaml lists, per VIP, whether it would
change, with both policies.`,
		Example: `  meshctl vip diff -f payments.yaml
  meshctl vip get payments -o yaml > p.yaml && $EDITOR p.yaml && meshctl vip diff -f p.yaml`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			docs, err := a.readVIPDocuments(file)
			if err != nil {
				return err
			}
			return a.diffVIPs(cmd, docs)
		}),
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file holding the VIPs, "-" for stdin (required)`)
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// vipDiff is one VIP's difference, for -o json|yaml.
type vipDiff struct {
	Name    string        `json:"name"`
	Changed bool          `json:"changed"`
	Current *registry.VIP `json:"current"`
	Desired registry.VIP  `json:"desired"`
}

func (a *app) diffVIPs(cmd *cobra.Command, docs []vipDocument) error {
	diffs := make([]vipDiff, 0, len(docs))
	var text strings.Builder
	for _, d := range docs {
		cur, found, err := a.currentVIP(cmd, d.vip.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", d.where, err)
		}
		vd := vipDiff{Name: d.vip.Name, Desired: d.vip, Changed: !found || !cur.Policy.Equal(d.vip.Policy)}
		var before []byte
		if found {
			vd.Current = &cur
			if before, err = yaml.Marshal(cur); err != nil {
				return err
			}
		}
		after, err := yaml.Marshal(d.vip)
		if err != nil {
			return err
		}
		diffs = append(diffs, vd)
		if vd.Changed {
			text.WriteString(unifiedDiff("vip/"+d.vip.Name+" (in force)", "vip/"+d.vip.Name+" ("+d.where+")", string(before), string(after)))
		}
	}
	return a.emit(diffs, func(w io.Writer) {
		if text.Len() == 0 {
			fmt.Fprintln(w, "No differences found: applying the file would change nothing.")
			return
		}
		fmt.Fprint(w, text.String())
	})
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
			if len(vips) == 0 && a.output == "table" {
				fmt.Fprintln(a.stdout, "No VIPs found: apply one with meshctl vip apply -f FILE.")
				return nil
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
			return a.emit(deleted{Kind: "vip", VIP: args[0], Deleted: true}, func(w io.Writer) {
				fmt.Fprintf(w, "vip/%s deleted\n", args[0])
			})
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
			if len(shown) == 0 && a.output == "table" {
				fmt.Fprintln(a.stdout, "No VIPs found: the control plane knows none"+map[bool]string{true: " of those named", false: " yet"}[len(args) > 0]+".")
				return nil
			}
			return a.emit(shown, vipStatTable(shown))
		}),
	}
}
