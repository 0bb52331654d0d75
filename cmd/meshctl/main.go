// Command meshctl is the command line of xspace-mesh for service owners and
// platform engineers: it applies VIP policies, registers instances (and keeps
// their leases alive), and shows what the control plane serves to proxies.
// It talks to meshd's REST API; see `meshctl --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
