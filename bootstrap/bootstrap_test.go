package bootstrap

import (
	"errors"
	"testing"
)

func TestGRPC(t *testing.T) {
	tests := []struct {
		name string
		opts GRPCOptions
		want string
	}{
		{
			name: "default node id",
			opts: GRPCOptions{XDS: "127.0.0.1:18000", Service: "orders"},
			want: `{
  "xds_servers": [
    {
      "server_uri": "127.0.0.1:18000",
      "channel_creds": [
        {
          "type": "insecure"
        }
      ],
      "server_features": [
        "xds_v3"
      ]
    }
  ],
  "node": {
    "id": "orders-grpc",
    "cluster": "orders",
    "locality": {}
  }
}
`,
		},
		{
			name: "explicit node id",
			opts: GRPCOptions{XDS: "meshd:18000", Service: "orders", NodeID: "orders-7f9c"},
			want: `{
  "xds_servers": [
    {
      "server_uri": "meshd:18000",
      "channel_creds": [
        {
          "type": "insecure"
        }
      ],
      "server_features": [
        "xds_v3"
      ]
    }
  ],
  "node": {
    "id": "orders-7f9c",
    "cluster": "orders",
    "locality": {}
  }
}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := GRPC(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestGRPCInvalid(t *testing.T) {
	for _, o := range []GRPCOptions{
		{XDS: "", Service: "orders"},
		{XDS: "127.0.0.1:18000", Service: ""},
		{XDS: "127.0.0.1:18000", Service: "Orders"},
		{XDS: "127.0.0.1:18000", Service: "orders", TokenFile: "/etc/xspace/orders.token"}, // a token needs TLS
	} {
		if _, err := GRPC(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("GRPC(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}
