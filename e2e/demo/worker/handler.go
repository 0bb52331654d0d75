package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
)

// errorBody is the answer to a request that could not be served.
type errorBody struct {
	Error string `json:"error"`
}

// failedCall is the answer when the call through the sidecar failed.
type failedCall struct {
	Error     string  `json:"error"`
	LatencyMS float64 `json:"latency_ms"`
}

// newHandler returns the worker's handler: GET /call and GET /healthz.
func newHandler(cfg config, logger *slog.Logger) http.Handler {
	c := newCaller(cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /call", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		authority, path := q.Get("authority"), q.Get("path")
		if path == "" {
			path = "/"
		}
		if authority == "" {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "query parameter authority is required, e.g. /call?authority=api.svip&path=/hello"})
			return
		}
		if err := validTarget(authority, path); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad query parameters: " + err.Error()})
			return
		}
		res, err := c.call(r.Context(), authority, path)
		switch {
		case err != nil:
			logger.Warn("call failed", "authority", authority, "path", path, "error", err, "latency_ms", res.LatencyMS)
			writeJSON(w, http.StatusBadGateway, failedCall{Error: err.Error(), LatencyMS: res.LatencyMS})
		default:
			logger.Info("call", "authority", authority, "path", path, "status", res.Status, "latency_ms", res.LatencyMS)
			writeJSON(w, http.StatusOK, res)
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // the answer types are strings and numbers: always encodable
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
