package admin

import (
	"net/http"

	"github.com/credproxy/credproxy/internal/problem"
)

// kind is one admin error (RFC 9457 problem type): its slug, fixed title
// and status. Like the proxy's refusal kinds, a type is never renamed or
// reused for another meaning; README.md ("Tasks and the control API")
// lists them.
type kind struct {
	slug, title string
	status      int
}

var (
	probBadRequest       = &kind{"admin-bad-request", "Bad admin request", http.StatusBadRequest}
	probUnauthorized     = &kind{"admin-unauthorized", "Admin token missing or wrong", http.StatusUnauthorized}
	probAdminDisabled    = &kind{"admin-disabled", "Admin API disabled", http.StatusForbidden}
	probNotFound         = &kind{"admin-not-found", "Not found", http.StatusNotFound}
	probMethodNotAllowed = &kind{"admin-method-not-allowed", "Method not allowed", http.StatusMethodNotAllowed}
	probTooLarge         = &kind{"admin-body-too-large", "Request body too large", http.StatusRequestEntityTooLarge}
	probUnsupportedType  = &kind{"admin-unsupported-media-type", "Request body must be JSON", http.StatusUnsupportedMediaType}
	probStoreFailed      = &kind{"admin-store-failed", "Secret store failed", http.StatusBadGateway}
	probNotImplemented   = &kind{"admin-not-implemented", "Not implemented", http.StatusNotImplemented}
	probUnavailable      = &kind{"admin-unavailable", "Shutting down", http.StatusServiceUnavailable}
	probHostRefused      = &kind{"admin-host-refused", "Host header refused (DNS rebinding protection)", http.StatusForbidden}
	probReloadFailed     = &kind{"admin-reload-failed", "Config refused; the one in force stays", http.StatusUnprocessableEntity}
)

// writeProblem answers k with detail, which names things (ids, credential
// names, fields), never a value.
func writeProblem(w http.ResponseWriter, k *kind, detail string) {
	problem.Write(w, problem.New(k.slug, k.title, k.status, detail))
}
