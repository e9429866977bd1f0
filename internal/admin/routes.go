package admin

import (
	"errors"
	"net/http"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
)

// controlRoutes mounts the control API, every route behind the token.
func controlRoutes(r *router, c *control.Control) {
	r.authed("GET /leases", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.ListLeases())
	})
	r.authed("POST /leases/{id}/revoke", func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if err := c.RevokeLease(req.Context(), id); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "revoked"})
	})
}

// writeError answers a control API error with its problem kind. Its text
// names ids and credentials only: the lease manager scrubs store errors.
func writeError(w http.ResponseWriter, err error) {
	k := probStoreFailed // the store failed to do what was asked
	switch {
	case errors.Is(err, control.ErrInvalid):
		k = probBadRequest
	case errors.Is(err, lease.ErrNotFound):
		k = probNotFound
	case errors.Is(err, control.ErrNoReload):
		k = probNotImplemented
	case errors.Is(err, lease.ErrClosed):
		k = probUnavailable
	}
	writeProblem(w, k, err.Error())
}
