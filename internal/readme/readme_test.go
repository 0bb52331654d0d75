package readme

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestMetrics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	doc := "# x\n\n## Metrics\n\n| metric | what |\n|---|---|\n| `xspace_b_total{type}`, `xspace_a` | x |\n| `xspace_a` | again |\n\nProse naming `xspace_not_in_table`.\n\n## Next\n\n| `xspace_after` | x |\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Metrics(path)
	if err != nil || !slices.Equal(got, []string{"xspace_a", "xspace_b_total"}) {
		t.Fatalf("Metrics = %v, %v", got, err)
	}
	if err := os.WriteFile(path, []byte("# x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Metrics(path); err == nil {
		t.Fatal("a README without a Metrics section was read")
	}
}
