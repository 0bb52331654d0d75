package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestVIPApplyChecksEveryDocumentFirst: one bad document in a file stops
// the whole file before anything is stored, and every bad one is named.
func TestVIPApplyChecksEveryDocumentFirst(t *testing.T) {
	e := newTestEnv(t)
	stdin := paymentsYAML + "---\nname: orders\npolicy:\n  protocl: http2\n---\nname: Bad_Name\n"
	code, _, stderr := e.meshctl(t, stdin, "vip", "apply", "-f", "-")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	for _, want := range []string{"-, document 2: unknown_field", "protocl", "-, document 3: invalid_argument", "nothing was applied: 2 of 3 documents are invalid"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if vips, err := e.store.ListVIPs(t.Context()); err != nil || len(vips) != 0 {
		t.Fatalf("stored %v, %v; want nothing", vips, err)
	}
}

// TestVIPApplyDryRunAndDiff: --dry-run and diff say what apply would do
// and change nothing.
func TestVIPApplyDryRunAndDiff(t *testing.T) {
	e := newTestEnv(t)
	file := writeFile(t, paymentsYAML)
	if out := e.mustRun(t, "vip", "apply", "-f", file, "--dry-run"); out != "vip/payments would be created (dry run)\n" {
		t.Errorf("dry run of a new VIP: %q", out)
	}
	if out := e.mustRun(t, "vip", "list"); !strings.Contains(out, "No VIPs found") {
		t.Fatalf("the dry run stored something: %q", out)
	}
	e.mustRun(t, "vip", "apply", "-f", file)
	if out := e.mustRun(t, "vip", "diff", "-f", file); !strings.Contains(out, "No differences found") {
		t.Errorf("diff of what is applied: %q", out)
	}
	changed := writeFile(t, strings.Replace(paymentsYAML, "request: 3s", "request: 5s", 1))
	if out := e.mustRun(t, "vip", "apply", "-f", changed, "--dry-run"); out != "vip/payments would be configured (dry run)\n" {
		t.Errorf("dry run of a change: %q", out)
	}
	out := e.mustRun(t, "vip", "diff", "-f", changed)
	if !strings.Contains(out, "--- vip/payments (in force)") || !strings.Contains(out, "-    request: 3s\n+    request: 5s\n") {
		t.Errorf("diff:\n%s", out)
	}
	var diffs []vipDiff
	if err := json.Unmarshal([]byte(e.mustRun(t, "vip", "diff", "-f", changed, "-o", "json")), &diffs); err != nil ||
		len(diffs) != 1 || !diffs[0].Changed || diffs[0].Current == nil || diffs[0].Desired.Policy.Timeouts.Request.D().String() != "5s" {
		t.Errorf("diff -o json: %+v, %v", diffs, err)
	}
	if v, err := e.store.GetVIP(t.Context(), "payments"); err != nil || v.Policy.Timeouts.Request.D().String() != "3s" {
		t.Errorf("dry run and diff changed the VIP: %+v, %v", v, err)
	}
}

// TestOutputOnEveryCommand: deletes print JSON with -o json; empty lists
// say so in a table and are [] in JSON.
func TestOutputOnEveryCommand(t *testing.T) {
	e := newTestEnv(t)
	if _, err := e.store.PutVIP(t.Context(), registry.VIP{Name: "payments"}); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun(t, "instance", "list", "payments"); !strings.Contains(out, "No instances found") {
		t.Errorf("empty instance list: %q", out)
	}
	if out := e.mustRun(t, "instance", "list", "payments", "-o", "json"); out != "[]\n" {
		t.Errorf("empty instance list -o json: %q", out)
	}
	e.mustRun(t, "instance", "register", "payments", "--id", "p1", "--address", "10.0.0.1", "--port", "8080")
	var d deleted
	if err := json.Unmarshal([]byte(e.mustRun(t, "instance", "deregister", "payments", "p1", "-o", "json")), &d); err != nil ||
		d != (deleted{Kind: "instance", VIP: "payments", ID: "p1", Deleted: true}) {
		t.Errorf("deregister -o json: %+v, %v", d, err)
	}
	if _, err := e.store.PutVIP(t.Context(), registry.VIP{Name: "orders"}); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun(t, "vip", "delete", "orders", "-o", "yaml"); out != "deleted: true\nkind: vip\nvip: orders\n" {
		t.Errorf("vip delete -o yaml: %q", out)
	}
}

// TestTypoSuggestions: a misspelt subcommand or flag at any level gets the
// nearest one.
func TestTypoSuggestions(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vip", "aply"}, "Did you mean this?\n\tapply"},
		{[]string{"instance", "regster"}, "Did you mean this?\n\tregister"},
		{[]string{"token", "isue"}, "Did you mean this?\n\tissue"},
		{[]string{"vip", "list", "--outptu", "json"}, "Did you mean this?\n\t--output"},
		{[]string{"proxy-statu"}, "Did you mean this?\n\tproxy-status"},
	} {
		code, _, stderr := e.meshctl(t, "", tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	if code, out, _ := runMeshctl(t, "--version"); code != exitOK || !strings.HasPrefix(out, "meshctl ") || !strings.Contains(out, "(revision ") {
		t.Errorf("meshctl --version: exit %d, %q", code, out)
	}
}
