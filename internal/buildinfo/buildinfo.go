// Package buildinfo says which build of xspace-mesh is running: the version
// and revision the Makefile stamps into both binaries with -ldflags, or,
// for a plain `go build`, what the Go toolchain recorded (debug.ReadBuildInfo).
// meshd exports it as the metric xspace_build_info and on /debug/info;
// meshctl prints it with --version and compares it with meshd's.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by the Makefile:
//
//	-ldflags "-X github.com/prisma-systems/xspace-mesh/internal/buildinfo.version=v0.4.0
//	          -X github.com/prisma-systems/xspace-mesh/internal/buildinfo.revision=1a2b3c4"
var (
	version  string
	revision string
)

// Unknown is the version or revision of a build that recorded none.
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"go_version"`
}

// Get returns the running binary's build: the values stamped by the
// Makefile, else those the toolchain recorded (the module version, and the
// VCS revision when built from a checkout with VCS stamping on), else
// Unknown.
func Get() Info {
	return resolve(version, revision, debug.ReadBuildInfo)
}

func resolve(v, rev string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: v, Revision: rev, GoVersion: runtime.Version()}
	if bi, ok := read(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if info.Revision == "" {
					info.Revision = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && rev == "" && info.Revision != "" && !strings.HasSuffix(info.Revision, "-dirty") {
			info.Revision += "-dirty"
		}
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}

// String is the line both binaries print for --version:
// "meshd v0.4.0 (revision 1a2b3c4, go1.26.8)".
func (i Info) String(program string) string {
	return fmt.Sprintf("%s %s (revision %s, %s)", program, i.Version, i.Revision, i.GoVersion)
}

// Known reports whether the build recorded a version.
func (i Info) Known() bool { return i.Version != Unknown }

// Collector returns the gauge xspace_build_info{version,revision,go_version},
// always 1, so that dashboards can show and alerts can compare the builds
// of a fleet of replicas.
func Collector() prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "xspace_build_info",
		Help:        "The running build of meshd: always 1, with its version, VCS revision and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "go_version": i.GoVersion},
	})
	g.Set(1)
	return g
}
