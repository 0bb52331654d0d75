package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// MaxBodyBytes is the largest request body the API reads.
const MaxBodyBytes = 64 << 10

// Media types a request body may have.
var (
	jsonTypes = []string{"application/json"}
	yamlTypes = []string{"application/yaml", "application/x-yaml", "text/yaml"}
	// vipTypes are accepted by PUT /v1/vips/{vip}, so a policy file can be sent as it is.
	vipTypes = slices.Concat(jsonTypes, yamlTypes)
)

// decodeBody reads the request body into v, strictly: one JSON object (or,
// where accepted, one YAML document), no unknown fields, nothing after it, at
// most MaxBodyBytes. Every failure is an *Error that says what to fix. It
// returns the body as JSON (YAML converted), for checks of what was given.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, accepted []string) ([]byte, error) {
	mt, err := mediaType(r, accepted)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, errorf(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "",
			"the request body is larger than %d bytes; send a smaller one", tooBig.Limit)
	case err != nil:
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "", "the request body could not be read completely; send it again")
	case len(bytes.TrimSpace(body)) == 0:
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "", "the request body is empty; send a %s object", describeTypes(accepted))
	case !utf8.Valid(body):
		line, col := position(body, int64(invalidUTF8At(body)))
		return nil, errorf(http.StatusBadRequest, CodeMalformedBody, "",
			"the body is not valid UTF-8 (line %d, column %d); send text in UTF-8", line, col)
	}
	if slices.Contains(yamlTypes, mt) {
		if body, err = yamlToJSON(body); err != nil {
			return nil, err
		}
	}
	return body, decodeJSON(body, v)
}

// mediaType returns the request's media type if the endpoint accepts it.
func mediaType(r *http.Request, accepted []string) (string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "",
			"the request has a body but no Content-Type; set Content-Type to one of %s", strings.Join(accepted, ", "))
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(accepted, mt) {
		return "", errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "",
			"Content-Type %q is not accepted here; use one of %s", ct, strings.Join(accepted, ", "))
	}
	return mt, nil
}

func describeTypes(accepted []string) string {
	if slices.ContainsFunc(accepted, func(t string) bool { return slices.Contains(yamlTypes, t) }) {
		return "JSON or YAML"
	}
	return "JSON"
}

// decodeJSON decodes exactly one JSON object from b into v.
func decodeJSON(b []byte, v any) error {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return errorf(http.StatusBadRequest, CodeMalformedBody, "", "the body must be an object ({...}), not %s", firstWord(t))
	}
	if e := checkKeys(b, typeOf(v)); e != nil {
		return e
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return explainDecode(b, v, err)
	}
	off := dec.InputOffset()
	if rest := bytes.TrimSpace(b[off:]); len(rest) > 0 {
		line, col := position(b, off+int64(bytes.Index(b[off:], rest[:1])))
		return errorf(http.StatusBadRequest, CodeMalformedBody, "",
			"unexpected data after the JSON object at line %d, column %d; send exactly one object", line, col)
	}
	return nil
}

// explainDecode turns a decoding error into an *Error that names the place
// and, where it is about one field, the field.
func explainDecode(b []byte, v any, err error) error {
	var (
		syntax  *json.SyntaxError
		invalid *registry.ValidationError
	)
	switch {
	case errors.As(err, &syntax):
		line, col := position(b, syntax.Offset)
		return errorf(http.StatusBadRequest, CodeMalformedBody, "",
			"the body is not valid JSON: %s at line %d, column %d", syntax.Error(), line, col)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, CodeMalformedBody, "",
			"the JSON body ends before the object is complete; check for a missing '}', ']' or '\"'")
	case errors.As(err, &invalid):
		// A value the model refuses as it decodes (allowed_callers: null).
		return errorf(http.StatusBadRequest, CodeInvalidArgument, invalid.Field, "%s", invalid.Error())
	}
	if e := locate(b, typeOf(v), ""); e != nil {
		return e
	}
	return errorf(http.StatusBadRequest, CodeMalformedBody, "",
		"the body does not have the expected shape; check the field names and value types")
}

// invalidUTF8At returns the offset of the first byte of b that is not valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// position converts a byte offset in b to a 1-based line and column.
func position(b []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(b)))
	before := b[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func firstWord(b []byte) string {
	switch {
	case len(b) == 0:
		return "nothing"
	case b[0] == '[':
		return "a list"
	case bytes.HasPrefix(b, []byte("null")):
		return "null"
	case b[0] == '"':
		return "a string"
	}
	return "a bare value"
}
