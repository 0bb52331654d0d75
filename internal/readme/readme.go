// Package readme reads what tests compare with the README: the metrics its
// Metrics table lists.
package readme

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

var metricName = regexp.MustCompile("`(xspace_[a-z0-9_]+)")

// Metrics returns, sorted, the metric names of the Metrics table of the
// README at path (the rows of the table under "## Metrics", not the prose
// after it).
func Metrics(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("readme: %w", err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Metrics\n")
	if !ok {
		return nil, errors.New("readme: " + path + " has no Metrics section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var out []string
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range metricName.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("readme: the Metrics table of " + path + " names no metric")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
