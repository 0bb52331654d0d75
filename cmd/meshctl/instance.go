package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

func (a *app) instanceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "instance",
		Aliases: []string{"instances", "inst"},
		Short:   "Register, list and deregister the instances of a VIP",
		Long: `An instance is one process serving a VIP, at an address and port. It holds a
lease: the registry expires it when no heartbeat arrives within its TTL.
"instance register --heartbeat" registers and keeps the lease alive until
interrupted, then deregisters, which suits a sidecar container or a systemd unit.`,
		Example: `  meshctl instance register payments --address 10.0.0.12 --port 8080 --heartbeat
  meshctl instance list payments
  meshctl instance status payments web-1 DRAINING
  meshctl instance deregister payments web-1`,
		RunE: groupRun,
	}
	cmd.AddCommand(a.registerCommand(), a.instanceListCommand(), a.deregisterCommand(), a.statusCommand())
	return cmd
}

// registerFlags are the flags of "instance register".
type registerFlags struct {
	id         string
	address    string
	port       uint32
	securePort uint32
	zone       string
	weight     uint32
	status     string
	ttl        time.Duration
	meta       []string
	heartbeat  bool
	// weightSet and ttlSet say whether --weight and --ttl were given: 0
	// given is refused, left out means the server's default.
	weightSet, ttlSet bool
}

const registerLong = `Register (or replace) an instance of VIP. The VIP is created with the default
policy if it does not exist yet.

--id defaults to HOSTNAME-PORT (e.g. web-7f9c-8080): stable across restarts of
the same process on the same host, so a restarted instance replaces its old
registration instead of adding a second one. Characters an id may not hold
are replaced by '-'.

The lease is --ttl, in whole seconds (default 30s on the server). Without
--heartbeat, renew it yourself (PUT .../heartbeat) or the instance expires.
With --heartbeat, meshctl stays in the foreground and renews the lease every
TTL/3; if the server answers that the instance is unknown (its lease expired,
or the registry restarted) it registers again; failures are logged and retried
with backoff. On SIGINT or SIGTERM it deregisters the instance and exits 0.`

func (a *app) registerCommand() *cobra.Command {
	var f registerFlags
	cmd := &cobra.Command{
		Use:   "register VIP --address ADDR --port N",
		Short: "Register an instance of a VIP, optionally keeping its lease alive",
		Long:  registerLong,
		Example: `  meshctl instance register payments --address 10.0.0.12 --port 8080
  meshctl instance register payments --id web-1 --address 10.0.0.12 --port 8080 \
      --secure-port 8443 --zone eu-west-1a --weight 10 --meta version=1.4.2 --meta track=canary
  meshctl instance register payments --address 10.0.0.12 --port 8080 --ttl 15s --heartbeat`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			f.weightSet, f.ttlSet = cmd.Flags().Changed("weight"), cmd.Flags().Changed("ttl")
			reg, err := f.registration()
			if err != nil {
				return err
			}
			id := f.id
			if id == "" {
				id = defaultID(f.port)
			}
			return a.register(cmd, args[0], id, reg, f.heartbeat)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "instance id, unique within the VIP (default HOSTNAME-PORT)")
	fl.StringVar(&f.address, "address", "", "IP address the instance listens on (required)")
	fl.Uint32Var(&f.port, "port", 0, "plaintext port (required)")
	fl.Uint32Var(&f.securePort, "secure-port", 0, "mutual-TLS port, if the instance serves one")
	fl.StringVar(&f.zone, "zone", "", "zone or failure domain, e.g. eu-west-1a")
	fl.Uint32Var(&f.weight, "weight", 0, "load-balancing weight, 1 to 1000 (default 1)")
	fl.StringVar(&f.status, "status", "", "UP, STARTING, DOWN, OUT_OF_SERVICE or DRAINING (default UP)")
	fl.DurationVar(&f.ttl, "ttl", 0, "lease, whole seconds such as 30s (default 30s)")
	fl.StringArrayVar(&f.meta, "meta", nil, "metadata KEY=VALUE; repeat for more")
	fl.BoolVar(&f.heartbeat, "heartbeat", false, "stay running, renew the lease every TTL/3, deregister on SIGINT/SIGTERM")
	_ = cmd.MarkFlagRequired("address")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}

// registration builds the request body from the flags.
func (f registerFlags) registration() (api.Registration, error) {
	switch {
	case f.ttl < 0 || f.ttl%time.Second != 0 || f.ttlSet && f.ttl == 0:
		return api.Registration{}, usageError{fmt.Sprintf("--ttl %s: use whole seconds, at least 1s, such as 30s", f.ttl)}
	case f.weightSet && f.weight == 0:
		return api.Registration{}, usageError{"--weight 0: " + api.ZeroWeightHint}
	}
	var meta map[string]string
	for _, kv := range f.meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return api.Registration{}, usageError{fmt.Sprintf("--meta %q: use KEY=VALUE", kv)}
		}
		if meta == nil {
			meta = map[string]string{}
		}
		meta[k] = v
	}
	return api.Registration{
		Address:    f.address,
		Port:       f.port,
		SecurePort: f.securePort,
		Zone:       f.zone,
		Weight:     f.weight,
		Status:     registry.Status(strings.ToUpper(f.status)),
		Metadata:   meta,
		TTLSeconds: int64(f.ttl / time.Second),
	}, nil
}

// defaultID returns HOSTNAME-PORT with characters an id may not hold replaced.
func defaultID(port uint32) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "instance"
	}
	id := []rune(host + "-" + strconv.FormatUint(uint64(port), 10))
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:", c)
		if !ok {
			id[i] = '-'
		}
	}
	return string(id)
}

func (a *app) register(cmd *cobra.Command, vip, id string, reg api.Registration, heartbeat bool) error {
	c := a.client()
	inst, err := c.Register(cmd.Context(), vip, id, reg)
	if err != nil {
		return err
	}
	if err := a.emit(inst, instanceTable([]api.Instance{inst}, time.Now())); err != nil {
		return err
	}
	if !heartbeat {
		return nil
	}
	// The lease in force is the one meshd answered with (its default when
	// --ttl was not given).
	m := &api.Member{
		Client: c, VIP: vip, ID: id, Registration: reg,
		Interval: time.Duration(inst.TTLSeconds) * time.Second / 3,
		Logger:   newLogger(a.stderr).With("vip", vip, "instance_id", id),
	}
	m.Logger.Info("interrupt to deregister")
	m.Keep(cmd.Context())
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	return m.Leave(ctx)
}

func (a *app) instanceListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list VIP",
		Aliases: []string{"ls"},
		Short:   "List the instances of a VIP",
		Long: `List the instances registered for VIP, sorted by id, with their status,
the state of their lease and when it was last renewed. LEASE is "ok";
"grace" for an instance restored when meshd started that has not renewed
since; or "overdue" for one whose TTL passed without a heartbeat: it still
receives traffic until it expires, or for as long as self-preservation holds it
(see /readyz). The Consul registry shows "-".`,
		Example: `  meshctl instance list payments
  meshctl instance list payments -o json | jq -r '.[] | select(.status == "UP") | .address'`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			insts, err := a.client().Instances(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if insts == nil {
				insts = []api.Instance{}
			}
			if len(insts) == 0 && a.output == "table" {
				fmt.Fprintf(a.stdout, "No instances found: VIP %s has none registered.\n", args[0])
				return nil
			}
			return a.emit(insts, instanceTable(insts, time.Now()))
		}),
	}
}

func (a *app) deregisterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "deregister VIP ID",
		Short: "Remove an instance from a VIP at once",
		Long: `Remove instance ID from VIP. Sidecars stop sending it new requests as soon
as the control plane pushes the change. To let it finish what it has first,
set its status to DRAINING, wait, then deregister.`,
		Example: `  meshctl instance deregister payments web-1`,
		Args:    cobra.ExactArgs(2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := a.client().Deregister(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			return a.emit(deleted{Kind: "instance", VIP: args[0], ID: args[1], Deleted: true}, func(w io.Writer) {
				fmt.Fprintf(w, "instance %s/%s deregistered\n", args[0], args[1])
			})
		}),
	}
}

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status VIP ID STATUS",
		Short: "Set an instance's status (UP, STARTING, DOWN, OUT_OF_SERVICE, DRAINING)",
		Long: `Set the status of instance ID of VIP. Only UP instances receive new traffic;
DRAINING ones finish what they have. STATUS is case-insensitive.`,
		Example: `  meshctl instance status payments web-1 draining
  meshctl instance status payments web-1 UP`,
		Args: cobra.ExactArgs(3),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			status := registry.Status(strings.ToUpper(args[2]))
			inst, err := a.client().SetStatus(cmd.Context(), args[0], args[1], status)
			if err != nil {
				return err
			}
			return a.emit(inst, instanceTable([]api.Instance{inst}, time.Now()))
		}),
	}
}
