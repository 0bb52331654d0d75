package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/config"
)

// readmes are the documents whose examples TestREADMEExamples applies.
var readmes = []string{"../../README.md", "../../envoy-configs/README.md"}

// example is one YAML or JSON example of a markdown file.
type example struct {
	where string // file:line
	lang  string // yaml or json
	text  string
}

var (
	fence     = regexp.MustCompile("^(\\s*)```+\\s*([A-Za-z]*)")
	catPrompt = regexp.MustCompile(`^\$ cat \S+\.(ya?ml|json)\s*$`)
)

// examples returns the examples of a markdown file: fenced blocks marked
// yaml, yml or json, and what a console block shows of a file with
// "$ cat FILE.yaml" (up to the next prompt).
func examples(t *testing.T, path string) []example {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	var block []string
	lang, start, indent, in := "", 0, "", false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		m := fence.FindStringSubmatch(line)
		switch {
		case m != nil && !in:
			lang, start, indent, in, block = strings.ToLower(m[2]), n, m[1], true, nil
		case m != nil:
			in = false
			out = append(out, blockExamples(fmt.Sprintf("%s:%d", strings.TrimPrefix(path, "../../"), start), lang, block)...)
		case in:
			block = append(block, strings.TrimPrefix(line, indent))
		}
	}
	return out
}

// blockExamples returns the examples one fenced block holds.
func blockExamples(where, lang string, lines []string) []example {
	switch lang {
	case "yaml", "yml":
		return []example{{where, "yaml", strings.Join(lines, "\n") + "\n"}}
	case "json":
		return []example{{where, "json", strings.Join(lines, "\n") + "\n"}}
	case "console":
		var out []example
		for i := 0; i < len(lines); i++ {
			m := catPrompt.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			j := i + 1
			for j < len(lines) && !strings.HasPrefix(lines[j], "$ ") {
				j++
			}
			kind := map[bool]string{true: "json", false: "yaml"}[m[1] == "json"]
			out = append(out, example{fmt.Sprintf("%s (line %d of the block)", where, i+1), kind, strings.Join(lines[i+1:j], "\n") + "\n"})
			i = j - 1
		}
		return out
	}
	return nil
}

// configKeys are the top-level keys of meshd's configuration file.
var configKeys = func() []string {
	var keys []string
	for f := range reflect.TypeFor[config.Config]().Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}()

// TestREADMEExamples applies every YAML and JSON example of the READMEs to
// a real meshd: VIP policies and registrations through its REST API,
// configuration files through meshd --config --print-config, and error
// bodies are checked to be the API's error shape. Each applied example must
// be accepted, and what meshd then holds must be what the example says. An
// example of another kind fails the test until it is taught here.
func TestREADMEExamples(t *testing.T) {
	meshdBin, _ := binaries(t)
	p := startMeshd(t, meshdBin, t.TempDir())
	base := "http://" + strings.TrimPrefix(p.http, "http://")
	total := 0
	for _, path := range readmes {
		for i, ex := range examples(t, path) {
			total++
			t.Run(ex.where, func(t *testing.T) { applyExample(t, meshdBin, base, ex, i) })
		}
	}
	if total < 5 {
		t.Errorf("found %d examples in %v; the extraction is broken", total, readmes)
	}
}

// applyExample applies one example according to its top-level keys.
func applyExample(t *testing.T, meshdBin, base string, ex example, n int) {
	j, err := yaml.YAMLToJSONStrict([]byte(ex.text))
	if err != nil {
		t.Fatalf("example is not valid %s: %v\n%s", ex.lang, err, ex.text)
	}
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil {
		t.Fatalf("example is not an object: %v\n%s", err, ex.text)
	}
	ct := map[string]string{"yaml": "application/yaml", "json": "application/json"}[ex.lang]
	keys := slices.Sorted(maps.Keys(doc))
	switch {
	case slices.Equal(keys, []string{"error"}):
		checkErrorExample(t, j)
	case len(keys) > 0 && allIn(keys, []string{"name", "policy"}):
		name, _ := doc["name"].(string)
		if name == "" {
			name = fmt.Sprintf("readme-%d", n)
		}
		got := put(t, base+"/v1/vips/"+name, ct, ex.text)
		subset(t, "", doc, got)
	case slices.Contains(keys, "address"):
		got := put(t, fmt.Sprintf("%s/v1/vips/readme/instances/readme-%d", base, n), ct, ex.text)
		subset(t, "", doc, got)
	case len(keys) > 0 && allIn(keys, configKeys):
		file := filepath.Join(t.TempDir(), "meshd.yaml")
		if err := os.WriteFile(file, []byte(ex.text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(meshdBin, "--config", file, "--print-config").Output()
		if err != nil {
			t.Fatalf("meshd --config with this example: %v\n%s", err, ex.text)
		}
		printed := printedConfig(t, out)
		subset(t, "", doc, printed)
		if allIn(configKeys, keys) { // a complete configuration: the README shows it as the default
			defaults, err := exec.Command(meshdBin, "--print-config").Output()
			if err != nil {
				t.Fatal(err)
			}
			subset(t, "meshd's default not in the README's", printedConfig(t, defaults), doc)
		}
	default:
		t.Fatalf("an example with keys %v that this test cannot apply; teach applyExample what it is:\n%s", keys, ex.text)
	}
}

func printedConfig(t *testing.T, out []byte) map[string]any {
	t.Helper()
	var printed map[string]any
	if err := yaml.Unmarshal(out, &printed); err != nil {
		t.Fatal(err)
	}
	return printed
}

func allIn(keys, allowed []string) bool {
	return !slices.ContainsFunc(keys, func(k string) bool { return !slices.Contains(allowed, k) })
}

// put sends body to url and returns the answer, which must be a success.
func put(t *testing.T, url, contentType, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s: %d %s\nexample:\n%s", url, resp.StatusCode, b, body)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkErrorExample checks an error body is exactly the API's error shape
// with one of its codes.
func checkErrorExample(t *testing.T, j []byte) {
	var body struct {
		Error api.Error `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("not the API's error shape: %v", err)
	}
	codes := []string{
		api.CodeInvalidArgument, api.CodeMalformedBody, api.CodeUnknownField, api.CodeUnsupportedMediaType,
		api.CodePayloadTooLarge, api.CodeNotFound, api.CodeMethodNotAllowed, api.CodeConflict, api.CodeUnavailable, api.CodeInternal,
	}
	if !slices.Contains(codes, body.Error.Code) || body.Error.Message == "" {
		t.Errorf("error example %+v: unknown code or no message", body.Error)
	}
}

// subset checks that every value of want is in got: every value an example
// gives is what meshd holds (or the other way round).
// Durations compare as durations ("1h" is "1h0m0s"); a value meshd leaves
// out must be a zero one (port: 0). YAML 1.1 reads the key on as true; meshd
// gives it back as on.
func subset(t *testing.T, path string, want any, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, _ := got.(map[string]any)
		for k, wv := range w {
			gk := k
			if k == "true" && strings.HasSuffix(path, "retries") {
				gk = "on"
			}
			gv, ok := g[gk]
			if !ok {
				if !isZero(wv) {
					t.Errorf("%s.%s: want %v, got nothing", path, k, wv)
				}
				continue
			}
			subset(t, path+"."+k, wv, gv)
		}
	case string:
		wd, errW := time.ParseDuration(w)
		gs, _ := got.(string)
		if gd, errG := time.ParseDuration(gs); errW == nil && errG == nil && wd == gd {
			return
		}
		if w != gs {
			t.Errorf("%s: want %q, got %v", path, w, got)
		}
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Errorf("%s: want %v, got %v", path, want, got)
		}
	}
}

func isZero(v any) bool {
	switch v := v.(type) {
	case float64:
		return v == 0
	case string:
		d, err := time.ParseDuration(v)
		return v == "" || err == nil && d == 0
	case bool:
		return !v
	}
	return v == nil
}
