package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Codes in the "code" member of every error body. Clients branch on the code;
// the message is for people.
const (
	CodeInvalidArgument      = "invalid_argument"
	CodeMalformedBody        = "malformed_body"
	CodeUnknownField         = "unknown_field"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodePayloadTooLarge      = "payload_too_large"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeForbidden            = "forbidden"
	CodeConflict             = "conflict"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
)

// Error is what the server answers when a request fails, on the wire as
// {"error":{"code":...,"message":...,"field":...}}. The client returns it as
// the error of any call the server refused.
type Error struct {
	// Status is the HTTP status code; it is not part of the body.
	Status int `json:"-"`
	// Code is one of the Code constants.
	Code string `json:"code"`
	// Message says what was wrong and how to fix it.
	Message string `json:"message"`
	// Field names the offending field ("port", "policy.timeouts.connect"),
	// or the URL parameter ("vip", "id"), when the error is about one.
	Field string `json:"field,omitempty"`
}

// Error prints the error as the server wrote it:
// "invalid_argument: port: 0 is not a port; use 1 to 65535 (field port)".
func (e *Error) Error() string {
	s := e.Message
	if e.Code != "" {
		s = e.Code + ": " + s
	}
	if e.Field != "" {
		s += " (field " + e.Field + ")"
	}
	return s
}

// errorBody is the envelope of every error response.
type errorBody struct {
	Error *Error `json:"error"`
}

func errorf(status int, code, field, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// WriteJSON writes v as the JSON body of a response with the given status.
// A value that cannot be marshalled becomes a 500 internal error.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{&Error{Code: CodeInternal, Message: "the response could not be encoded; this is a bug in the server"}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError writes the JSON error body every endpoint of the control plane
// answers with. field may be empty.
func WriteError(w http.ResponseWriter, status int, code, message, field string) {
	WriteJSON(w, status, errorBody{&Error{Code: code, Message: message, Field: field}})
}

// fail answers a request with err. Errors made at this edge (*Error) and
// validation errors keep their message; registry sentinels get a message
// that says what to do; anything else is logged and hidden behind a 500.
// notFound, when set, is the message for registry.ErrNotFound.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	var (
		apiErr *Error
		invErr *registry.ValidationError
	)
	switch {
	case errors.As(err, &apiErr):
	case errors.As(err, &invErr):
		apiErr = &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: invErr.Error(), Field: invErr.Field}
	case errors.Is(err, registry.ErrNotFound):
		if notFound == "" {
			notFound = "not found"
		}
		apiErr = &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: notFound}
	case errors.Is(err, registry.ErrConflict):
		apiErr = &Error{
			Status: http.StatusConflict, Code: CodeConflict,
			Message: "the request contradicts what is stored; read the current state and try again",
		}
	case errors.Is(err, registry.ErrUnavailable):
		apiErr = &Error{
			Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: "the registry is unavailable; try again shortly",
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		apiErr = &Error{
			Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: "the request was cancelled or timed out before the registry answered; try again",
		}
	default:
		h.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		apiErr = &Error{
			Status: http.StatusInternalServerError, Code: CodeInternal,
			Message: "internal error; the server logged the details, try again and report it if it persists",
		}
	}
	if apiErr.Status == http.StatusServiceUnavailable {
		h.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", "1")
	}
	WriteError(w, apiErr.Status, apiErr.Code, apiErr.Message, apiErr.Field)
}

// IsNotFound says whether the server answered 404: no such VIP or instance.
func IsNotFound(err error) bool {
	apiErr, ok := errors.AsType[*Error](err)
	return ok && apiErr.Status == http.StatusNotFound
}
