package main

import (
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
			return a.emit(proxies, proxyTable(proxies))
		}),
	}
}
