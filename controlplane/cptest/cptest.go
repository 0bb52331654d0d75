// Package cptest runs a control plane, assembled as meshd assembles it
// (controlplane.New), on a loopback port for tests, and connects to it.
package cptest

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// Running is a control plane serving xDS on Addr; Conn is a plaintext
// client connection to it.
type Running struct {
	*controlplane.ControlPlane
	Addr string
	Conn *grpc.ClientConn

	stop sync.Once
	g    *grpc.Server
}

// Start assembles a control plane from opts, starts it and serves it on a
// new 127.0.0.1 port. It is stopped when the test ends, or earlier by Stop.
func Start(tb testing.TB, opts controlplane.Options) *Running {
	tb.Helper()
	cp := controlplane.New(opts)
	cp.Start()
	g := grpc.NewServer(server.GRPCOptions(1000)...)
	cp.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cp.Stop()
		tb.Fatalf("listen on loopback: %v", err)
	}
	go func() { _ = g.Serve(lis) }()
	r := &Running{ControlPlane: cp, Addr: lis.Addr().String(), g: g}
	r.Conn, err = grpc.NewClient(r.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.Stop()
		tb.Fatalf("connect to %s: %v", r.Addr, err)
	}
	tb.Cleanup(r.Stop)
	return r
}

// Stop closes the connection, stops serving and stops the control plane,
// as a meshd that goes away; it returns once all of it has ended.
func (r *Running) Stop() {
	r.stop.Do(func() {
		if r.Conn != nil {
			_ = r.Conn.Close()
		}
		r.g.Stop()
		r.ControlPlane.Stop()
	})
}
