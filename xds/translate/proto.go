package translate

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// duration converts a model duration to a protobuf Duration.
func duration(d registry.Duration) *durationpb.Duration { return durationpb.New(d.D()) }

// u32 wraps v in a UInt32Value, for the optional fields Envoy defaults when unset.
func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// stringStruct returns a Struct holding one string field, for filter metadata.
func stringStruct(key, value string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{key: structpb.NewStringValue(value)}}
}
