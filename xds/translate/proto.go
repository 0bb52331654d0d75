package translate

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// duration converts a model duration to a protobuf Duration.
func duration(d registry.Duration) *durationpb.Duration { return durationpb.New(d.D()) }

// u32 wraps v in a UInt32Value, for the optional fields Envoy defaults when unset.
func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// mustAny packs m into an Any, marshalled deterministically so that the same
// input always yields the same bytes. Packing a generated message cannot fail;
// a failure is a programming error, hence the panic.
func mustAny(m proto.Message) *anypb.Any {
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("translate: pack %T into Any: %v", m, err))
	}
	return a
}

// stringStruct returns a Struct holding one string field, for filter metadata.
func stringStruct(key, value string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{key: structpb.NewStringValue(value)}}
}
