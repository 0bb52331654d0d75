package api_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/api"
)

// TestCheckVIPAnswersAsPUT: CheckVIP, which meshctl vip apply runs on every
// document before applying any, refuses exactly what PUT /v1/vips/{name}
// refuses, with the same error, and accepts what it stores, as stored.
func TestCheckVIPAnswersAsPUT(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, vip, contentType, doc string
	}{
		{"valid yaml", "payments", "application/yaml", "policy:\n  protocol: grpc\n  timeouts: {request: 3s}\n"},
		{"valid json", "orders", "application/json", `{"name":"orders","policy":{"load_balancing":"ring_hash","hash_on":{"header":"x-user"}}}`},
		{"unknown field", "payments", "application/yaml", "policy:\n  protocl: grpc\n"},
		{"bad value", "payments", "application/yaml", "policy:\n  protocol: smtp\n"},
		{"wrong type", "payments", "application/json", `{"policy":{"port":"eighty"}}`},
		{"name mismatch", "payments", "application/yaml", "name: orders\n"},
		{"bad name", "Bad_Name", "application/yaml", "policy: {}\n"},
		{"two documents", "payments", "application/yaml", "policy: {}\n---\npolicy: {}\n"},
		{"duplicate key", "payments", "application/json", `{"policy":{"port":1,"port":2}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checked, checkErr := api.CheckVIP(tt.vip, tt.contentType, []byte(tt.doc))
			stored, _, putErr := s.client.ApplyVIP(t.Context(), tt.vip, tt.contentType, []byte(tt.doc))
			var want, got *api.Error
			errors.As(putErr, &want)
			errors.As(checkErr, &got)
			if (putErr == nil) != (checkErr == nil) || want != nil && (got == nil || got.Code != want.Code || got.Field != want.Field || got.Message != want.Message) {
				t.Fatalf("CheckVIP = %v; PUT = %v", checkErr, putErr)
			}
			if putErr == nil {
				if d := cmp.Diff(stored, checked); d != "" {
					t.Errorf("CheckVIP's VIP differs from the stored one (-stored +checked):\n%s", d)
				}
			}
		})
	}
}
