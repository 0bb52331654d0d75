package main

import "strings"

// xfccURI returns the URI field of the last element of an
// x-forwarded-client-cert header: the SPIFFE id of the client certificate
// the nearest proxy verified. It returns "" when there is none.
//
// The header, as Envoy writes it, is a comma-separated list of elements,
// one per proxy hop, oldest first; each element is semicolon-separated
// key=value pairs. A value may be double-quoted, with \" and \\ escaped
// inside, and may then contain ',', ';' and '='.
func xfccURI(header string) string {
	elems := splitUnquoted(header, ',')
	last := elems[len(elems)-1]
	for _, pair := range splitUnquoted(last, ';') {
		key, value, ok := strings.Cut(pair, "=")
		if ok && strings.EqualFold(strings.TrimSpace(key), "URI") {
			return unquote(strings.TrimSpace(value))
		}
	}
	return ""
}

// splitUnquoted splits s at each sep outside double quotes. It always
// returns at least one part.
func splitUnquoted(s string, sep byte) []string {
	var parts []string
	start, quoted, escaped := 0, false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unquote removes the double quotes around v, and the backslashes escaping
// characters inside them. A value without quotes is returned as it is.
func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	inner := v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(inner); i++ {
		if inner[i] == '\\' && i+1 < len(inner) {
			i++
		}
		b.WriteByte(inner[i])
	}
	return b.String()
}
