package vault

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Sentinel errors, matched with errors.Is on what Issue, TrustBundle and
// login return.
var (
	// ErrPermissionDenied: Vault refused the request (HTTP 403): the
	// token's policies do not allow it, or the token is invalid or expired.
	ErrPermissionDenied = errors.New("permission denied by vault")
	// ErrUnknownRole: the PKI mount has no role of the configured name.
	ErrUnknownRole = errors.New("unknown PKI role")
)

// ResponseError is Vault's answer to a failed request, shortened to its
// status and messages (the api package's own message spans several lines
// and repeats the URL). It unwraps to *api.ResponseError.
type ResponseError struct {
	StatusCode int
	Messages   []string
	err        *api.ResponseError
}

func (e *ResponseError) Error() string {
	msg := strings.Join(e.Messages, "; ")
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("vault answered %d: %s", e.StatusCode, msg)
}

func (e *ResponseError) Unwrap() error { return e.err }

// Is matches ErrPermissionDenied for a 403 and ErrUnknownRole for Vault's
// unknown-role answers.
func (e *ResponseError) Is(target error) bool {
	switch target {
	case ErrPermissionDenied:
		return e.StatusCode == http.StatusForbidden
	case ErrUnknownRole:
		return e.StatusCode == http.StatusBadRequest && e.mentions("unknown role", "role not found", "no role found")
	}
	return false
}

func (e *ResponseError) mentions(phrases ...string) bool {
	for _, m := range e.Messages {
		m = strings.ToLower(m)
		for _, p := range phrases {
			if strings.Contains(m, p) {
				return true
			}
		}
	}
	return false
}

// shorten replaces an *api.ResponseError in err by a *ResponseError;
// other errors (a refused connection, a timeout) pass unchanged.
func shorten(err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	msgs := make([]string, 0, len(re.Errors))
	for _, m := range re.Errors {
		// Vault nests messages as "1 error occurred:\n\t* permission denied\n\n".
		for _, line := range strings.Split(m, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
			if line != "" && !strings.HasSuffix(line, "error occurred:") && !strings.HasSuffix(line, "errors occurred:") {
				msgs = append(msgs, line)
			}
		}
	}
	return &ResponseError{StatusCode: re.StatusCode, Messages: msgs, err: re}
}

// hint suggests the likely fix for a failed request to path.
func hint(err error, path, role string) string {
	switch {
	case errors.Is(err, ErrUnknownRole):
		return fmt.Sprintf(" (is role %q defined on this PKI mount?)", role)
	case errors.Is(err, ErrPermissionDenied):
		return fmt.Sprintf(" (the token's policies must allow this operation on %s, and the token must be valid)", path)
	}
	return ""
}
