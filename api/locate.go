package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
)

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }

// locate walks a JSON document that failed to decode into t and returns an
// *Error for the first unknown field, or the first value that does not fit
// its field, with the field's full path ("policy.timeouts.connect").
// encoding/json names the path for neither unknown nested fields nor errors
// from UnmarshalJSON, and a client needs it to fix its request. Keys are
// visited in sorted order so the answer is deterministic. It returns nil when
// it finds nothing wrong.
func locate(data []byte, t reflect.Type, path string) *Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A struct that decodes itself (registry.Policy) still has the fields
	// its tags name; other types that decode themselves are leaves.
	if reflect.PointerTo(t).Implements(unmarshalerType) && t.Kind() != reflect.Struct {
		return checkValue(data, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return checkValue(data, t, path)
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(obj) {
			i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, k) })
			if i < 0 {
				return unknownField(join(path, k), path, fields)
			}
			if e := locate(obj[k], fieldType(t, fields[i]), join(path, k)); e != nil {
				return e
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return checkValue(data, t, path)
		}
		for _, k := range sortedKeys(obj) {
			if e := locate(obj[k], t.Elem(), join(path, k)); e != nil {
				return e
			}
		}
	case reflect.Slice:
		var items []json.RawMessage
		if json.Unmarshal(data, &items) != nil {
			return checkValue(data, t, path)
		}
		for i, item := range items {
			if e := locate(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); e != nil {
				return e
			}
		}
	default:
		return checkValue(data, t, path)
	}
	return nil
}

// checkValue decodes data into a fresh t and explains the failure, if any.
func checkValue(data []byte, t reflect.Type, path string) *Error {
	err := json.Unmarshal(data, reflect.New(t).Interface())
	if err == nil {
		return nil
	}
	msg := err.Error()
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		msg = fmt.Sprintf("expected %s, got %s", describeKind(t), typeErr.Value)
		if t.Kind() == reflect.String && typeErr.Value == "bool" {
			msg += " (YAML reads an unquoted on, off, yes, no, y or n as true or false: quote it)"
		}
	}
	where := path
	if where == "" {
		where = "body"
	}
	return errorf(http.StatusBadRequest, CodeInvalidArgument, path, "%s: %s", where, msg)
}

func unknownField(path, parent string, fields []string) *Error {
	where := "here"
	if parent != "" {
		where = "in " + parent
	}
	hint := ""
	if key := path[strings.LastIndex(path, ".")+1:]; key == "true" || key == "false" {
		hint = " (YAML reads an unquoted on, off, yes, no, y or n as true or false: quote the key)"
	}
	if near := Nearest(path[strings.LastIndex(path, ".")+1:], fields); near != "" {
		hint += "; did you mean " + near + "?"
	}
	return errorf(http.StatusBadRequest, CodeUnknownField, path,
		"unknown field %q; the fields allowed %s are %s%s", path, where, strings.Join(fields, ", "), hint)
}

// Explain says where a JSON document that failed to decode into v is
// wrong, as the API answers it: the first unknown field with the fields
// allowed there and the nearest of them, or the first value that does not
// fit its field, each with the field's full path and without Go's type
// names. nil when it finds nothing wrong. meshd's configuration file is
// explained with it too.
func Explain(data []byte, v any) *Error { return locate(data, typeOf(v), "") }

// Nearest is the name closest to a misspelt one (a field, a flag): at most
// two edits away, or one that is a prefix of the other; "" if none.
func Nearest(key string, fields []string) string {
	best, bestDist := "", 3
	for _, f := range fields {
		k := strings.ToLower(key)
		d := editDistance(k, f)
		if d < bestDist || best == "" && (strings.HasPrefix(f, k) || strings.HasPrefix(k, f)) {
			best, bestDist = f, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two field names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// jsonFields lists the JSON names of t's fields in declaration order.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// fieldType returns the type of t's field whose JSON name is name.
func fieldType(t reflect.Type, name string) reflect.Type {
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name || tag == "" && f.Name == name {
			return f.Type
		}
	}
	panic("api: no field " + name + " in " + t.String()) // unreachable: name comes from jsonFields(t)
}

func describeKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(math.MaxUint64)>>(64-t.Bits()))
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "an object"
}

func sortedKeys(m map[string]json.RawMessage) []string { return slices.Sorted(maps.Keys(m)) }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
