package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// emit prints v in the chosen output format; table writes the table form.
func (a *app) emit(v any, table func(w io.Writer)) error {
	var b []byte
	var err error
	switch a.output {
	case "json":
		b, err = json.MarshalIndent(v, "", "  ")
		b = append(b, '\n')
	case "yaml":
		b, err = yaml.Marshal(v)
	default:
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = a.stdout.Write(b)
	return err
}

// row writes one tab-separated table row.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

func vipTable(vips []registry.VIP) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "NAME", "PROTOCOL", "LOAD-BALANCING", "PLAINTEXT", "PORT", "SECURE-PORT", "CONNECT", "REQUEST", "RETRIES", "OUTLIER-DETECTION")
		for _, v := range vips {
			p := v.Policy
			row(w, v.Name, string(p.Protocol), string(p.LoadBalancing), strconv.FormatBool(p.PlaintextAllowed()),
				port(p.Port), port(p.SecurePort), p.Timeouts.Connect.D().String(), p.Timeouts.Request.D().String(),
				strconv.Itoa(int(p.Retries.Attempts)), onOff(p.OutlierDetection != nil))
		}
	}
}

func instanceTable(insts []api.Instance, now time.Time) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "VIP", "ID", "ADDRESS", "PORT", "SECURE-PORT", "ZONE", "WEIGHT", "STATUS", "LEASE", "TTL", "RENEWED")
		for _, i := range insts {
			row(w, i.VIP, i.ID, i.Address, port(i.Port), port(i.SecurePort), orDash(i.Zone), strconv.Itoa(int(i.Weight)),
				string(i.Status), orDash(string(i.Lease)), (time.Duration(i.TTLSeconds) * time.Second).String(), ago(now, i.RenewedAt))
		}
	}
}

func proxyTable(proxies []api.ProxyInfo) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "NODE", "SERVICE", "PROTOCOL", "SINCE", "CLUSTERS")
		for _, p := range proxies {
			row(w, p.NodeID, p.Service, p.Protocol, p.ConnectedSince.UTC().Format(time.RFC3339), clusters(p.Clusters))
		}
	}
}

func vipStatTable(stats []api.VIPStat) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "NAME", "INSTANCES", "ROUTABLE", "SUBSCRIBERS", "WATCHED")
		for _, s := range stats {
			row(w, s.Name, strconv.Itoa(s.Instances), strconv.Itoa(s.Routable), strconv.Itoa(s.Subscribers), yesNo(s.Watched))
		}
	}
}

// maxClusterNames is how many cluster names a proxy's table row shows; -o
// json or yaml shows them all.
const maxClusterNames = 3

func clusters(names []string) string {
	switch {
	case len(names) == 0:
		return "-"
	case len(names) <= maxClusterNames:
		return strings.Join(names, ",")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(names[:maxClusterNames], ","), len(names)-maxClusterNames)
}

func port(p uint32) string {
	if p == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(p), 10)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// deleted is what a delete prints with -o json or yaml.
type deleted struct {
	Kind    string `json:"kind"`
	VIP     string `json:"vip"`
	ID      string `json:"id,omitempty"`
	Deleted bool   `json:"deleted"`
}
