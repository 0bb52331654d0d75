package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

const (
	jsonCT = "application/json"
	yamlCT = "application/yaml"
	inst   = "/v1/vips/payments/instances/web-9"
)

// TestBadInput sends requests that must be refused and checks the status,
// the error code and field, that the body is the API's JSON error, and that
// nothing stored changed. It is long because of its table: one line per
// bad request.
func TestBadInput(t *testing.T) {
	s := newTestServer(t)
	ctx := t.Context()
	if _, _, err := s.client.PutVIP(ctx, registry.VIP{Name: "payments"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.client.PutVIP(ctx, registry.VIP{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Register(ctx, "payments", "web-1", api.Registration{Address: "10.0.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	huge := `{"address":"10.0.0.1","port":80,"zone":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		status      int
		code        string
		field       string
	}{
		{"vip name upper case", "PUT", "/v1/vips/Payments", jsonCT, `{}`, 400, api.CodeInvalidArgument, "vip"},
		{"vip name leading dash", "GET", "/v1/vips/-payments", "", ``, 400, api.CodeInvalidArgument, "vip"},
		{"vip name too long", "DELETE", "/v1/vips/" + strings.Repeat("a", 64), "", ``, 400, api.CodeInvalidArgument, "vip"},
		{"vip name with a dot", "PUT", "/v1/vips/payments.vip/instances/web-1", jsonCT, `{"address":"10.0.0.1","port":80}`, 400, api.CodeInvalidArgument, "vip"},
		{"name mismatch", "PUT", "/v1/vips/payments", jsonCT, `{"name":"orders"}`, 400, api.CodeInvalidArgument, "name"},
		{"address is a hostname", "PUT", inst, jsonCT, `{"address":"web-9.local","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address empty", "PUT", inst, jsonCT, `{"address":"","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address unspecified", "PUT", inst, jsonCT, `{"address":"0.0.0.0","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address with zone", "PUT", inst, jsonCT, `{"address":"fe80::1%eth0","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"port 0", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":0}`, 400, api.CodeInvalidArgument, "port"},
		{"port 70000", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":70000}`, 400, api.CodeInvalidArgument, "port"},
		{"port negative", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":-1}`, 400, api.CodeInvalidArgument, "port"},
		{"port as string", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":"80"}`, 400, api.CodeInvalidArgument, "port"},
		{"secure port 70000", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"secure_port":70000}`, 400, api.CodeInvalidArgument, "secure_port"},
		{"weight too large", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"weight":1001}`, 400, api.CodeInvalidArgument, "weight"},
		{"weight 0", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"weight":0}`, 400, api.CodeInvalidArgument, "weight"},
		{"ttl 0", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":0}`, 400, api.CodeInvalidArgument, "ttl_seconds"},
		{"connect timeout 0s", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  timeouts: {connect: 0s}\n", 400, api.CodeInvalidArgument, "policy.timeouts.connect"},
		{"max connections 0", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"circuit_breakers":{"max_connections":0}}}`, 400, api.CodeInvalidArgument, "policy.circuit_breakers.max_connections"},
		{"ejection interval 0s", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"outlier_detection":{"interval":"0s"}}}`, 400, api.CodeInvalidArgument, "policy.outlier_detection.interval"},
		{"bad status", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"status":"RUNNING"}`, 400, api.CodeInvalidArgument, "status"},
		{"ttl negative", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":-5}`, 400, api.CodeInvalidArgument, "ttl_seconds"},
		{"ttl over a day", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":86401}`, 400, api.CodeInvalidArgument, "ttl_seconds"},
		{"ttl as duration string", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":"30s"}`, 400, api.CodeInvalidArgument, "ttl_seconds"},
		{"ttl fractional", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl_seconds":1.5}`, 400, api.CodeInvalidArgument, "ttl_seconds"},
		{"metadata empty key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"":"x"}}`, 400, api.CodeInvalidArgument, "metadata"},
		{"metadata value not a string", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"v":1}}`, 400, api.CodeInvalidArgument, "metadata.v"},
		{"unknown instance field", "PUT", inst, jsonCT, `{"adress":"10.0.0.1","port":80}`, 400, api.CodeUnknownField, "adress"},
		{"ttl under the model's name", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"ttl":"30s"}`, 400, api.CodeUnknownField, "ttl"},
		{"unknown nested vip field", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"timeouts":{"conect":"1s"}}}`, 400, api.CodeUnknownField, "policy.timeouts.conect"},
		{"unknown yaml field", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  protocl: grpc\n", 400, api.CodeUnknownField, "policy.protocl"},
		{"malformed json", "PUT", inst, jsonCT, `{"address" "10.0.0.1"}`, 400, api.CodeMalformedBody, ""},
		{"truncated json", "PUT", inst, jsonCT, `{"address":"10.0.0.1",`, 400, api.CodeMalformedBody, ""},
		{"trailing garbage", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80} xyz`, 400, api.CodeMalformedBody, ""},
		{"two objects", "PUT", "/v1/vips/payments", jsonCT, `{}{}`, 400, api.CodeMalformedBody, ""},
		{"body is a list", "PUT", "/v1/vips/payments", jsonCT, `[{"name":"payments"}]`, 400, api.CodeMalformedBody, ""},
		{"body is null", "PUT", "/v1/vips/payments", jsonCT, `null`, 400, api.CodeMalformedBody, ""},
		{"empty body", "PUT", "/v1/vips/payments", jsonCT, ``, 400, api.CodeMalformedBody, ""},
		{"empty status body", "PUT", "/v1/vips/payments/instances/web-1/status", jsonCT, "  \n", 400, api.CodeMalformedBody, ""},
		{"wrong content type", "PUT", "/v1/vips/payments", "text/plain", `{}`, 415, api.CodeUnsupportedMediaType, ""},
		{"missing content type", "PUT", inst, "", `{"address":"10.0.0.1","port":80}`, 415, api.CodeUnsupportedMediaType, ""},
		{"yaml for an instance", "PUT", inst, yamlCT, "address: 10.0.0.1\nport: 80\n", 415, api.CodeUnsupportedMediaType, ""},
		{"unparsable content type", "PUT", "/v1/vips/payments", "application/", `{}`, 415, api.CodeUnsupportedMediaType, ""},
		{"oversized body", "PUT", inst, jsonCT, huge, 413, api.CodePayloadTooLarge, ""},
		{"bad yaml", "PUT", "/v1/vips/payments", yamlCT, "policy: [unclosed\n", 400, api.CodeMalformedBody, ""},
		{"yaml duplicate key", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  protocol: grpc\n  protocol: http1\n", 400, api.CodeMalformedBody, ""},
		{"yaml two documents", "PUT", "/v1/vips/payments", yamlCT, "name: payments\n---\nname: orders\n", 400, api.CodeMalformedBody, ""},
		{"bad duration string", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"timeouts":{"connect":"5 seconds"}}}`, 400, api.CodeInvalidArgument, "policy.timeouts.connect"},
		{"duration as a number", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  retries:\n    per_try_timeout: 5\n", 400, api.CodeInvalidArgument, "policy.retries.per_try_timeout"},
		{"duration out of range", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"timeouts":{"request":"2h"}}}`, 400, api.CodeInvalidArgument, "policy.timeouts.request"},
		{"bad protocol", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"protocol":"http3"}}`, 400, api.CodeInvalidArgument, "policy.protocol"},
		{"bad lb policy", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  load_balancing: fastest\n", 400, api.CodeInvalidArgument, "policy.load_balancing"},
		{"bad retry condition", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"retries":{"on":["5xx","sometimes"]}}}`, 400, api.CodeInvalidArgument, "policy.retries.on"},
		{"too many retries", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"retries":{"attempts":11}}}`, 400, api.CodeInvalidArgument, "policy.retries.attempts"},
		{"plaintext not a bool", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"plaintext":"no"}}`, 400, api.CodeInvalidArgument, "policy.plaintext"},
		{"allowed caller not a service name", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"allowed_callers":["orders","web","Pay ments"]}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers[2]"},
		{"allowed caller is a cluster name", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  allowed_callers: [orders.svip]\n", 400, api.CodeInvalidArgument, "policy.allowed_callers[0]"},
		{"allowed caller empty", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"allowed_callers":[""]}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers[0]"},
		{"allowed callers null", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  allowed_callers:\n  protocol: http2\n", 400, api.CodeInvalidArgument, "policy.allowed_callers"},
		{"allowed callers not a list", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"allowed_callers":"orders"}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers"},
		{"allowed caller read as a bool", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  allowed_callers: [orders, no]\n", 400, api.CodeInvalidArgument, "policy.allowed_callers[1]"},
		{"allowed caller a number", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"allowed_callers":[7]}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers[0]"},
		{"too many allowed callers", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"allowed_callers":["a"` + strings.Repeat(`,"a"`, registry.MaxAllowedCallers) + `]}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers"},
		{"allowed callers of a new vip", "PUT", "/v1/vips/fresh", jsonCT, `{"policy":{"allowed_callers":["ok","NOT"]}}`, 400, api.CodeInvalidArgument, "policy.allowed_callers[1]"},
		{"invalid instance id", "PUT", "/v1/vips/payments/instances/web%201", jsonCT, `{"address":"10.0.0.1","port":80}`, 400, api.CodeInvalidArgument, "id"},
		{"instance id too long", "DELETE", "/v1/vips/payments/instances/" + strings.Repeat("x", 129), "", ``, 400, api.CodeInvalidArgument, "id"},
		{"heartbeat unknown instance", "PUT", inst + "/heartbeat", "", ``, 404, api.CodeNotFound, ""},
		{"heartbeat unknown vip", "PUT", "/v1/vips/nobody/instances/web-1/heartbeat", "", ``, 404, api.CodeNotFound, ""},
		{"status of unknown instance", "PUT", inst + "/status", jsonCT, `{"status":"DOWN"}`, 404, api.CodeNotFound, ""},
		{"bad status value", "PUT", "/v1/vips/payments/instances/web-1/status", jsonCT, `{"status":"SLEEPING"}`, 400, api.CodeInvalidArgument, "status"},
		{"status missing", "PUT", "/v1/vips/payments/instances/web-1/status", jsonCT, `{}`, 400, api.CodeInvalidArgument, "status"},
		{"deregister unknown instance", "DELETE", inst, "", ``, 404, api.CodeNotFound, ""},
		{"get unknown vip", "GET", "/v1/vips/nobody", "", ``, 404, api.CodeNotFound, ""},
		{"instances of unknown vip", "GET", "/v1/vips/nobody/instances", "", ``, 404, api.CodeNotFound, ""},
		{"delete unknown vip", "DELETE", "/v1/vips/nobody", "", ``, 404, api.CodeNotFound, ""},
		{"delete vip with instances", "DELETE", "/v1/vips/payments", "", ``, 409, api.CodeConflict, ""},
		{"wrong method on collection", "POST", "/v1/vips", jsonCT, `{"name":"orders"}`, 405, api.CodeMethodNotAllowed, ""},
		{"wrong method on instance", "PATCH", "/v1/vips/payments/instances/web-1", jsonCT, `{}`, 405, api.CodeMethodNotAllowed, ""},
		{"unknown path", "GET", "/v2/vips", "", ``, 404, api.CodeNotFound, ""},
		{"duplicate key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"port":81}`, 400, api.CodeMalformedBody, "port"},
		{"case-variant duplicate key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"Port":81}`, 400, api.CodeUnknownField, "Port"},
		{"key in another case", "PUT", inst, jsonCT, `{"Address":"10.0.0.1","port":80}`, 400, api.CodeUnknownField, "Address"},
		{"duplicate policy key", "PUT", "/v1/vips/payments", jsonCT, `{"policy":{"protocol":"grpc","protocol":"http1"}}`, 400, api.CodeMalformedBody, "policy.protocol"},
		{"duplicate metadata key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"v":"1","v":"2"}}`, 400, api.CodeMalformedBody, "metadata.v"},
		{"yaml case-variant key", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  protocol: grpc\n  Protocol: http1\n", 400, api.CodeUnknownField, "policy.Protocol"},
		{"address v4-mapped unspecified", "PUT", inst, jsonCT, `{"address":"::ffff:0.0.0.0","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address v4-mapped", "PUT", inst, jsonCT, `{"address":"::ffff:10.0.0.1","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address v6 unspecified", "PUT", inst, jsonCT, `{"address":"0:0::0","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"address broadcast", "PUT", inst, jsonCT, `{"address":"255.255.255.255","port":80}`, 400, api.CodeInvalidArgument, "address"},
		{"instance id dot", "PUT", "/v1/vips/payments/instances/%2E", jsonCT, `{"address":"10.0.0.1","port":80}`, 400, api.CodeInvalidArgument, "id"},
		{"instance id dot dot", "PUT", "/v1/vips/payments/instances/%2E%2E", jsonCT, `{"address":"10.0.0.1","port":80}`, 400, api.CodeInvalidArgument, "id"},
		{"NUL in zone", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"zone":"eu\u0000west"}`, 400, api.CodeInvalidArgument, "zone"},
		{"newline in zone", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"zone":"eu\nwest"}`, 400, api.CodeInvalidArgument, "zone"},
		{"NUL in metadata key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"a\u0000b":"x"}}`, 400, api.CodeInvalidArgument, "metadata"},
		{"control character in metadata value", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"v":"1\u0007"}}`, 400, api.CodeInvalidArgument, "metadata.v"},
		{"invalid UTF-8", "PUT", inst, jsonCT, "{\"address\":\"10.0.0.1\",\"port\":80,\"zone\":\"eu-\xff\"}", 400, api.CodeMalformedBody, ""},
		{"lone surrogate escape", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"zone":"eu-\ud800"}`, 400, api.CodeMalformedBody, "zone"},
		{"invalid UTF-8 in yaml", "PUT", "/v1/vips/payments", yamlCT, "policy:\n  protocol: \xfe\n", 400, api.CodeMalformedBody, ""},
		{"reserved metadata key", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"xspace-zone":"a"}}`, 400, api.CodeInvalidArgument, "metadata"},
		{"reserved metadata key, upper case", "PUT", inst, jsonCT, `{"address":"10.0.0.1","port":80,"metadata":{"XSPACE-status":"UP"}}`, 400, api.CodeInvalidArgument, "metadata"},
		{"unknown subresource", "GET", "/v1/vips/payments/endpoints", "", ``, 404, api.CodeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.snapshot(t)
			status, header, body := s.send(t, tt.method, tt.path, tt.contentType, []byte(tt.body))
			got := decodeError(t, header, body)
			if status != tt.status || got.Code != tt.code || got.Field != tt.field {
				t.Errorf("got %d code=%q field=%q, want %d code=%q field=%q\nbody: %s",
					status, got.Code, got.Field, tt.status, tt.code, tt.field, body)
			}
			if status == http.StatusMethodNotAllowed && header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			if after := s.snapshot(t); !bytes.Equal(before, after) {
				t.Errorf("stored state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// decodeError checks that body is exactly the API's JSON error shape with a
// message free of Go internals, and returns it.
func decodeError(t *testing.T, header http.Header, body []byte) api.Error {
	t.Helper()
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var envelope struct {
		Error api.Error `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&envelope); err != nil {
		t.Fatalf("error body %q is not the API's shape: %v", body, err)
	}
	e := envelope.Error
	if e.Message == "" {
		t.Errorf("error without a message: %s", body)
	}
	for _, leak := range []string{"json:", "Go struct", "Go value", "uint32", "embedded:", "bolt", "yaml.v"} {
		if strings.Contains(e.Message, leak) {
			t.Errorf("message leaks %q: %s", leak, e.Message)
		}
	}
	return e
}

func TestHeartbeatNotFoundSaysRegisterAgain(t *testing.T) {
	s := newTestServer(t)
	_, err := s.client.Heartbeat(t.Context(), "payments", "web-1")
	if err == nil || !strings.Contains(err.Error(), "register it again") {
		t.Errorf("Heartbeat of an unregistered instance: %v, want a message telling to register again", err)
	}
}
