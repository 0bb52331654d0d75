package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/api"
)

func (a *app) proxiesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "proxies",
		Short: "List the proxies connected to the control plane and the clusters they hold",
		Long: `List every xDS stream connected to the control plane: the proxy's node id, the
service it runs beside, the protocol of its stream (delta or sotw), when it
connected, and the clusters it holds. The table shows the first few clusters;
-o json or yaml shows all. It reads meshd's debug endpoint ` + api.ProxiesPath + `: use it
to answer "what does my proxy see?"`,
		Example: `  meshctl proxies
  meshctl proxies -o json | jq '.[] | select(.service == "payments") | .clusters'`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			proxies, err := a.client().Proxies(cmd.Context())
			if err != nil {
				return err
			}
			if proxies == nil {
				proxies = []api.ProxyInfo{}
			}
			if len(proxies) == 0 && a.output == "table" {
				fmt.Fprintln(a.stdout, "No proxies found: none is connected to this meshd.")
				return nil
			}
			return a.emit(proxies, proxyTable(proxies))
		}),
	}
}

// syncTypes are the columns of proxy-status, in the order Envoy uses them.
var syncTypes = []string{"cds", "eds", "lds", "rds", "sds"}

func (a *app) proxyStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "proxy-status [PROXY]",
		Short: "Show, per proxy and resource type, whether it holds what meshd sent it",
		Long: `Show, for each proxy connected to the control plane and each resource type
meshd sent it (cds, eds, lds, rds, sds), whether the proxy holds the last
response: SYNCED (it acknowledged it), PENDING (it has not answered yet) or
NACKED (it rejected it, and keeps what it had). "-" is a type never sent on
that stream.

With PROXY (a node id), show that proxy's streams type by type: the
version and nonce sent, the ones acknowledged, and the last rejection with
the proxy's own error text, even after later responses were accepted.
It reads meshd's debug endpoint ` + api.ProxiesPath + `; -o json or yaml shows all of it.`,
		Example: `  meshctl proxy-status
  meshctl proxy-status orders-1
  meshctl proxy-status -o json | jq '.[] | select(.types[]?.state == "NACKED") | .node_id'`,
		Args: cobra.MaximumNArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			proxies, err := a.client().Proxies(cmd.Context())
			if err != nil {
				return err
			}
			shown := []api.ProxyInfo{}
			for _, p := range proxies {
				if len(args) == 0 || p.NodeID == args[0] {
					shown = append(shown, p)
				}
			}
			switch {
			case len(args) > 0 && len(shown) == 0:
				return fmt.Errorf("no proxy %q is connected (meshctl proxy-status lists those that are)", args[0])
			case len(shown) == 0 && a.output == "table":
				fmt.Fprintln(a.stdout, "No proxies found: none is connected to this meshd.")
				return nil
			case len(args) > 0:
				return a.emit(shown, proxySyncDetail(shown))
			}
			return a.emit(shown, proxySyncTable(shown))
		}),
	}
}

func proxySyncTable(proxies []api.ProxyInfo) func(io.Writer) {
	return func(w io.Writer) {
		head := []string{"NODE", "SERVICE", "PROTOCOL"}
		for _, t := range syncTypes {
			head = append(head, strings.ToUpper(t))
		}
		row(w, head...)
		for _, p := range proxies {
			cells := []string{p.NodeID, orDash(p.Service), p.Protocol}
			for _, t := range syncTypes {
				cells = append(cells, syncState(p, t))
			}
			row(w, cells...)
		}
	}
}

func syncState(p api.ProxyInfo, typ string) string {
	for _, s := range p.Types {
		if s.Type == typ {
			return s.State
		}
	}
	return "-"
}

func proxySyncDetail(proxies []api.ProxyInfo) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "NODE", "STREAM", "TYPE", "STATE", "SENT", "ACKED", "NACKS", "LAST-NACK")
		for _, p := range proxies {
			stream := p.Protocol + "/" + strconv.FormatInt(p.StreamID, 10)
			if len(p.Types) == 0 {
				row(w, p.NodeID, stream, "-", "-", "-", "-", "0", "-")
			}
			for _, s := range p.Types {
				nacks, last := "0", "-"
				if n := s.LastNACK; n != nil {
					nacks = strconv.Itoa(n.Count)
					last = fmt.Sprintf("version %s nonce %s at %s: %s", orDash(n.Version), n.Nonce, n.At.UTC().Format(time.RFC3339), oneLine(n.Error))
				}
				row(w, p.NodeID, stream, s.Type, s.State, versionNonce(s.SentVersion, s.SentNonce),
					versionNonce(s.AckedVersion, s.AckedNonce), nacks, last)
			}
		}
	}
}

func versionNonce(version, nonce string) string {
	if nonce == "" {
		return "-"
	}
	return orDash(version) + " (nonce " + nonce + ")"
}

// oneLine keeps a table row on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
