package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestResolve(t *testing.T) {
	recorded := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: version}, Settings: settings}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name     string
		ver, rev string
		read     func() (*debug.BuildInfo, bool)
		want     Info
	}{
		{
			"stamped by the Makefile wins", "v1.2.3", "abc", recorded("v0.0.1", debug.BuildSetting{Key: "vcs.revision", Value: "def"}),
			Info{"v1.2.3", "abc", "go1.26.8"},
		},
		{
			"go build in a checkout", "", "", recorded("(devel)", debug.BuildSetting{Key: "vcs.revision", Value: "def"}, debug.BuildSetting{Key: "vcs.modified", Value: "true"}),
			Info{Unknown, "def-dirty", "go1.26.8"},
		},
		{"go install of a module version", "", "", recorded("v0.3.0"), Info{"v0.3.0", Unknown, "go1.26.8"}},
		{"nothing recorded", "", "", none, Info{Unknown, Unknown, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.ver, tt.rev, tt.read)
			if tt.want.GoVersion == "" {
				tt.want.GoVersion = got.GoVersion // runtime.Version()
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector())
	i := Get()
	want := `# HELP xspace_build_info The running build of meshd: always 1, with its version, VCS revision and Go version as labels.
# TYPE xspace_build_info gauge
xspace_build_info{go_version="` + i.GoVersion + `",revision="` + i.Revision + `",version="` + i.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "xspace_build_info"); err != nil {
		t.Error(err)
	}
	if s := i.String("meshd"); !strings.HasPrefix(s, "meshd "+i.Version+" (revision ") {
		t.Errorf("String = %q", s)
	}
}
