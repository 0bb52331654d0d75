package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// checkKeys walks a JSON body before it is decoded into a value of type t
// and refuses what encoding/json would accept silently: a key given twice
// (json keeps the last), a field name in another case (json matches names
// case-insensitively, so {"port":1,"Port":2} set port twice), and a string
// holding U+FFFD, which json puts in place of invalid UTF-8 or of a lone
// surrogate escape such as "\ud800". It returns nil for a body it cannot
// read: decoding then says what is wrong with it.
func checkKeys(body []byte, t reflect.Type) *Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	e, _ := walkValue(dec, t, "")
	return e
}

// walkValue reads one JSON value from dec; t is the Go type it decodes
// into, or nil where that is unknown. The error is for a body json cannot
// read, which decoding explains better.
func walkValue(dec *json.Decoder, t reflect.Type, path string) (*Error, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return walkList(dec, t, path)
		}
		if tok == '{' {
			return walkObject(dec, t, path)
		}
	case string:
		if strings.ContainsRune(tok, utf8.RuneError) {
			return replacedText(path), nil
		}
	}
	return nil, nil
}

func walkList(dec *json.Decoder, t reflect.Type, path string) (*Error, error) {
	var elem reflect.Type
	if t != nil && t.Kind() == reflect.Slice {
		elem = t.Elem()
	}
	for i := 0; dec.More(); i++ {
		if e, err := walkValue(dec, elem, fmt.Sprintf("%s[%d]", path, i)); e != nil || err != nil {
			return e, err
		}
	}
	_, err := dec.Token() // ']'
	return nil, err
}

func walkObject(dec *json.Decoder, t reflect.Type, path string) (*Error, error) {
	var fields []string
	if t != nil && t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		at := join(path, key)
		if strings.ContainsRune(key, utf8.RuneError) {
			return replacedText(at), nil
		}
		if e := fieldCase(key, at, fields); e != nil {
			return e, nil
		}
		if seen[key] {
			return errorf(http.StatusBadRequest, CodeMalformedBody, at,
				"%s: the key %q appears twice in the same object; give each field once", at, key), nil
		}
		seen[key] = true
		if e, err := walkValue(dec, memberType(t, key, fields), at); e != nil || err != nil {
			return e, err
		}
	}
	_, err := dec.Token() // '}'
	return nil, err
}

// memberType is the type the value of key decodes into, nil if unknown.
func memberType(t reflect.Type, key string, fields []string) reflect.Type {
	switch {
	case t == nil:
		return nil
	case t.Kind() == reflect.Map:
		return t.Elem()
	case slices.Contains(fields, key):
		return fieldType(t, key)
	}
	return nil
}

// fieldCase refuses a key that names one of a struct's fields in another case.
func fieldCase(key, at string, fields []string) *Error {
	if slices.Contains(fields, key) {
		return nil
	}
	for _, f := range fields {
		if strings.EqualFold(f, key) {
			return errorf(http.StatusBadRequest, CodeUnknownField, at,
				"unknown field %q; field names are lower case: write %q", at, f)
		}
	}
	return nil // an unknown field: decoding says so, with the fields allowed
}

func replacedText(at string) *Error {
	where := at
	if where == "" {
		where = "a key"
	}
	return errorf(http.StatusBadRequest, CodeMalformedBody, at,
		"%s: the text holds U+FFFD, which stands in for invalid UTF-8 or a lone surrogate escape such as \\ud800; send valid UTF-8", where)
}
