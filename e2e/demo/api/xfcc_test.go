package main

import "testing"

func TestXFCCURI(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"absent", "", ""},
		{"one hop", "By=spiffe://xspace/svc/api;Hash=abc;URI=spiffe://xspace/svc/worker", "spiffe://xspace/svc/worker"},
		{
			"last hop wins",
			"By=spiffe://xspace/svc/gw;URI=spiffe://xspace/svc/web,By=spiffe://xspace/svc/api;URI=spiffe://xspace/svc/worker",
			"spiffe://xspace/svc/worker",
		},
		{"last hop without URI", "URI=spiffe://xspace/svc/web,By=spiffe://xspace/svc/api;Hash=abc", ""},
		{"quoted value", `By=spiffe://xspace/svc/api;URI="spiffe://xspace/svc/worker"`, "spiffe://xspace/svc/worker"},
		{
			"separators inside quotes",
			`By=spiffe://xspace/svc/api;Subject="CN=worker,O=x;y";URI=spiffe://xspace/svc/worker`,
			"spiffe://xspace/svc/worker",
		},
		{
			"comma inside quotes of the last hop",
			`URI=spiffe://xspace/svc/old,Subject="O=a, Inc.";URI=spiffe://xspace/svc/worker`,
			"spiffe://xspace/svc/worker",
		},
		{"escaped quote", `Subject="a \"b\" c";URI="spiffe://x/\"q\""`, `spiffe://x/"q"`},
		{"spaces and key case", " By=a ; uri = spiffe://xspace/svc/worker ", "spiffe://xspace/svc/worker"},
		{"URI prefix is not URI", "URIX=spiffe://nope;By=a", ""},
		{"trailing comma", "URI=spiffe://xspace/svc/worker,", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := xfccURI(tt.header); got != tt.want {
				t.Errorf("xfccURI(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}
