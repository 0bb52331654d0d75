package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"sigs.k8s.io/yaml"
)

// yamlToJSON converts one YAML document to JSON, rejecting duplicate keys
// and further documents, which YAML decoders otherwise drop silently.
func yamlToJSON(y []byte) ([]byte, error) {
	if line := secondDocument(y); line > 0 {
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "",
			"the YAML body holds more than one document (another starts at line %d); send one VIP per request", line)
	}
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		msg = strings.Join(strings.Fields(strings.TrimPrefix(msg, "yaml: ")), " ")
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "", "the body is not valid YAML: %s", msg)
	}
	return retryOnKey(j)
}

// secondDocument returns the line number of a "---" separator that follows
// content, or 0 when y holds at most one document.
func secondDocument(y []byte) int {
	content := false
	n := 0
	for line := range bytes.Lines(y) {
		n++
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			if content {
				return n
			}
			continue
		}
		if s := bytes.TrimSpace(t); len(s) > 0 && s[0] != '#' && string(s) != "..." {
			content = true
		}
	}
	return 0
}

// retryOnKey gives back the key "on" of policy.retries that YAML 1.1 (which
// the YAML decoder implements) reads as the boolean true: unquoted, on, On,
// ON, yes and y are all true, and the JSON made from the document names the
// key "true". No field of a retry policy is called true, so under
// policy.retries that key can only be the retry conditions, and is renamed;
// given both ways, it is refused as given twice. j is one JSON object.
func retryOnKey(j []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc map[string]any
	if dec.Decode(&doc) != nil {
		return j, nil // not an object: decoding the body says what is wrong with it
	}
	policy, _ := doc["policy"].(map[string]any)
	retries, _ := policy["retries"].(map[string]any)
	on, ok := retries["true"]
	if !ok {
		return j, nil
	}
	if _, twice := retries["on"]; twice {
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "policy.retries.on",
			"policy.retries.on is given twice (YAML reads an unquoted on as true); give it once")
	}
	delete(retries, "true")
	retries["on"] = on
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "", "the YAML body cannot be read as JSON: %v", err)
	}
	return b, nil
}
