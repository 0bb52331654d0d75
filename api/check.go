package api

import (
	"errors"
	"net/http"
	"slices"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// CheckVIP decodes and checks one VIP document exactly as PUT
// /v1/vips/{name} does, and returns the VIP as a store would keep it
// (registry.Policy.Normalize), storing nothing: meshctl vip apply checks
// every document of a file before applying any, and shows what --dry-run
// and diff would change. contentType is a JSON or YAML media type. The
// error is an *Error, as the server would answer it.
func CheckVIP(name, contentType string, doc []byte) (registry.VIP, error) {
	var v registry.VIP
	if err := checkVIPParam(name); err != nil {
		return v, err
	}
	body := doc
	if slices.Contains(yamlTypes, contentType) {
		var err error
		if body, err = yamlToJSON(doc); err != nil {
			return v, err
		}
	}
	if err := decodeJSON(body, &v); err != nil {
		return v, err
	}
	if v.Name != "" && v.Name != name {
		return v, errorf(http.StatusBadRequest, CodeInvalidArgument, "name",
			"name: the body names VIP %q but the URL names %q; make them match or leave name out", v.Name, name)
	}
	v.Name = name
	var inv *registry.ValidationError
	if err := v.Validate(); errors.As(err, &inv) {
		return v, &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: inv.Error(), Field: inv.Field}
	} else if err != nil {
		return v, errorf(http.StatusBadRequest, CodeInvalidArgument, "", "%v", err)
	}
	v.Policy = v.Policy.Normalize()
	return v, nil
}
