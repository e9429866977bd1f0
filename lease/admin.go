package lease

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
)

// List describes every held lease, sorted by credential, identity and issue
// time. It never includes a value.
func (m *Manager) List() []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, l.info())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		return cmp.Or(cmp.Compare(a.Credential, b.Credential), cmp.Compare(a.Identity, b.Identity),
			a.Issued.Compare(b.Issued), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// AdminHandler serves the lease admin API; mount it at the admin server's
// root. GET /leases lists held leases (no values); POST /leases/{id}/revoke
// revokes one, audited with reason "manual". Errors are JSON too.
func AdminHandler(m *Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /leases", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, m.List())
	})
	mux.HandleFunc("POST /leases/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		err := m.Revoke(r.Context(), id, reasonManual)
		switch {
		case errors.Is(err, ErrNotFound):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such lease", "id": id})
		case err != nil:
			// The manager has dropped the lease; only the store's revoke failed.
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error(), "id": id})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "revoked"})
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
