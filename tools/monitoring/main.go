// Command monitoring checks the Prometheus alert rules and the Grafana
// dashboard shipped for meshd (deploy/): the rule file with Prometheus'
// own rule parser (what `promtool check rules` runs), the dashboard with
// Grafana's dashboard schema (strict: unknown or mistyped fields fail),
// and every PromQL expression in either with Prometheus' parser. Each
// metric the expressions name must be one meshd exports: -metrics lists
// them, one per line. It prints what it checked; any failure exits 1.
//
//	go run . -rules ../../deploy/prometheus/alerts.yaml -dashboard ../../deploy/grafana/meshd.json -metrics names.txt
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	rules := flag.String("rules", "", "Prometheus rule file (YAML)")
	dash := flag.String("dashboard", "", "Grafana dashboard (JSON)")
	metrics := flag.String("metrics", "", "file naming the metrics meshd exports, one per line")
	flag.Parse()
	if *rules == "" || *dash == "" || *metrics == "" {
		fmt.Fprintln(os.Stderr, "monitoring: -rules, -dashboard and -metrics are required")
		os.Exit(2)
	}
	if err := check(*rules, *dash, *metrics, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "monitoring:", err)
		os.Exit(1)
	}
}

func check(rulesFile, dashFile, metricsFile string, out io.Writer) error {
	exported, err := readLines(metricsFile)
	if err != nil {
		return err
	}
	p := parser.NewParser(parser.Options{})
	var errs []error
	used := map[string][]string{} // metric -> where

	groups, rerrs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	errs = append(errs, rerrs...)
	var nrules int
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				nrules++
				where := fmt.Sprintf("%s: alert %s", rulesFile, r.Alert)
				if r.Alert == "" {
					errs = append(errs, fmt.Errorf("%s: group %s has a recording rule; the file holds alerts only", rulesFile, g.Name))
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.Labels["severity"] == "" {
					errs = append(errs, fmt.Errorf("%s: needs a severity label, a summary and a description", where))
				}
				errs = append(errs, names(p, r.Expr, where, used))
			}
		}
	}

	npanels, exprs, err := dashboardExprs(dashFile)
	errs = append(errs, err)
	for _, e := range exprs {
		errs = append(errs, names(p, e.expr, dashFile+": panel "+e.panel, used))
	}

	for _, m := range slices.Sorted(maps.Keys(used)) {
		if !slices.Contains(exported, m) && !slices.Contains(exported, histogramOf(m)) {
			errs = append(errs, fmt.Errorf("%s names %s, which meshd does not export", strings.Join(used[m], ", "), m))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(out, "monitoring: %d alert rules and %d dashboard panels (%d queries) parse; the %d metrics they name are meshd's\n",
		nrules, npanels, len(exprs), len(used))
	return nil
}

// names records in used the metric names expr selects.
func names(p parser.Parser, expr, where string, used map[string][]string) error {
	e, err := p.ParseExpr(expr)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	var found bool
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			used[vs.Name] = append(used[vs.Name], where)
			found = true
		}
		return nil
	})
	if !found {
		return fmt.Errorf("%s: %q names no metric", where, expr)
	}
	return nil
}

// histogramOf is the histogram a _bucket, _sum or _count series belongs to.
func histogramOf(series string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, s); ok {
			return base
		}
	}
	return series
}

type panelExpr struct{ panel, expr string }

// dashboardExprs decodes the dashboard strictly and returns its number of
// panels and the PromQL of every query.
func dashboardExprs(file string) (int, []panelExpr, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, nil, err
	}
	cog.NewRuntime().RegisterPanelcfgVariant(timeseries.VariantConfig())
	// The classic JSON model, which Grafana imports; v2 is for its new API.
	var d dashboard.Dashboard //nolint:staticcheck // see above
	if err := strict(d.UnmarshalJSONStrict(b)); err != nil {
		return 0, nil, fmt.Errorf("%s: not a Grafana dashboard: %w", file, err)
	}
	if err := d.Validate(); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", file, err)
	}
	// The SDK (v0.0.22) drops panels whose strict decoding had no error
	// (it returns an empty error list as a non-nil error), so the panels
	// are decoded here, each as strictly.
	var raw struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", file, err)
	}
	panels, err := decodePanels(raw.Panels)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", file, err)
	}
	var exprs []panelExpr
	var errs []error
	for _, p := range panels {
		title := "(untitled)"
		if p.Title != nil {
			title = *p.Title
		}
		if len(p.queries) == 0 {
			errs = append(errs, fmt.Errorf("%s: panel %q has no query", file, title))
		}
		for _, q := range p.queries {
			exprs = append(exprs, panelExpr{title, q.Expr})
		}
	}
	if len(panels) == 0 {
		errs = append(errs, fmt.Errorf("%s: no panels", file))
	}
	return len(panels), exprs, errors.Join(errs...)
}

// panel is a dashboard panel and its Prometheus queries.
type panel struct {
	*dashboard.Panel
	queries []*prometheus.Dataquery
}

// decodePanels decodes panels strictly, the panels of rows included, and
// their queries, which must be Prometheus'.
func decodePanels(raws []json.RawMessage) ([]panel, error) {
	var out []panel
	for i, r := range raws {
		var kind struct {
			Type    string            `json:"type"`
			Panels  []json.RawMessage `json:"panels"`
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(r, &kind); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		if kind.Type == "row" {
			var row dashboard.RowPanel
			if err := strict(row.UnmarshalJSONStrict(r)); err != nil {
				return nil, fmt.Errorf("panels[%d]: %w", i, err)
			}
			inner, err := decodePanels(kind.Panels)
			if err != nil {
				return nil, fmt.Errorf("panels[%d].%w", i, err)
			}
			out = append(out, inner...)
			continue
		}
		p := panel{Panel: &dashboard.Panel{}}
		if err := strict(p.UnmarshalJSONStrict(r)); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		// Decoded again for the same reason as the panels.
		for j, t := range kind.Targets {
			q := &prometheus.Dataquery{}
			if err := strict(q.UnmarshalJSONStrict(t)); err != nil {
				return nil, fmt.Errorf("panels[%d].targets[%d]: %w", i, j, err)
			}
			if q.Datasource == nil || q.Datasource.Type == nil || *q.Datasource.Type != "prometheus" {
				return nil, fmt.Errorf("panels[%d].targets[%d]: the datasource must be of type prometheus", i, j)
			}
			p.queries = append(p.queries, q)
		}
		out = append(out, p)
	}
	return out, nil
}

// strict is err, but nil for the empty error list the SDK's strict
// decoders return when nothing was wrong.
func strict(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

func readLines(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 && sc.Err() == nil {
		return nil, fmt.Errorf("%s names no metric", file)
	}
	return out, sc.Err()
}
