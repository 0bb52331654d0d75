// Package envoyproto holds the small protobuf constructors that every
// producer of Envoy configuration needs: the xDS resources (translate) and
// the bootstraps (bootstrap) build theirs with the same ones.
package envoyproto

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Any packs m into an Any, marshalled deterministically so that the same
// input always yields the same bytes. Packing a generated message cannot
// fail; a failure is a programming error, hence the panic.
func Any(m proto.Message) *anypb.Any {
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("envoyproto: pack %T into Any: %v", m, err))
	}
	return a
}

// SocketAddress is the TCP address host:port.
func SocketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
