package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
)

// maxBodyBytes bounds a control API request body.
const maxBodyBytes = 1 << 20

// controlRoutes mounts the control API, every route behind the token. Each
// handler decodes, calls one control method and encodes: the behaviour is
// the control package's, shared with the MCP server.
func controlRoutes(r *router, c *control.Control) {
	r.authed("POST /tasks", func(w http.ResponseWriter, req *http.Request) {
		var body struct {
			Purpose     string   `json:"purpose"`
			TTL         *string  `json:"ttl"` // a Go duration: "30m", "1h30m"
			Identity    string   `json:"identity"`
			Credentials []string `json:"credentials"`
		}
		if !decode(w, req, &body) {
			return
		}
		tr := control.TaskRequest{Purpose: body.Purpose, Identity: body.Identity, Credentials: body.Credentials}
		if body.TTL != nil {
			d, err := time.ParseDuration(*body.TTL)
			if err != nil || d <= 0 {
				writeProblem(w, probBadRequest, fmt.Sprintf("ttl %q: want a positive Go duration such as \"30m\"", *body.TTL))
				return
			}
			tr.TTL = d
		}
		in, err := c.BeginTask(req.Context(), tr)
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Location", "/tasks/"+in.ID)
		writeJSON(w, http.StatusCreated, in)
	})
	r.authed("GET /tasks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.ListTasks())
	})
	r.authed("DELETE /tasks/{id}", func(w http.ResponseWriter, req *http.Request) {
		in, err := c.EndTask(req.Context(), req.PathValue("id"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, in)
	})
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
	r.authed("GET /credentials", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.ListCredentials())
	})
	r.authed("POST /explain", func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Method, URL, Identity string }
		if !decode(w, req, &body) {
			return
		}
		e, err := c.Explain(body.Method, body.URL, body.Identity)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	})
	r.authed("POST /-/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := c.Reload(); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
}

// decode reads req's JSON body into v: at most maxBodyBytes, one object, no
// unknown fields (a typo must not silently drop a setting). An empty body
// is an empty object. On failure it has answered and returns false.
func decode(w http.ResponseWriter, req *http.Request, v any) bool {
	if ct := req.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeProblem(w, probUnsupportedType, fmt.Sprintf("Content-Type %q: want application/json", ct))
			return false
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	} else if err == nil {
		if _, trail := dec.Token(); trail != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == io.EOF:
		return true
	case errors.As(err, &tooBig):
		writeProblem(w, probTooLarge, fmt.Sprintf("request body over %d bytes", maxBodyBytes))
		return false
	case err != nil:
		writeProblem(w, probBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// writeError answers a control API error with its problem kind. Its text
// names ids and credentials only: the lease manager scrubs store errors.
func writeError(w http.ResponseWriter, err error) {
	k := probStoreFailed // the store failed to do what was asked
	switch {
	case errors.Is(err, control.ErrInvalid):
		k = probBadRequest
	case errors.Is(err, lease.ErrNotFound), errors.Is(err, lease.ErrUnknownTask):
		k = probNotFound
	case errors.Is(err, control.ErrNoReload):
		k = probNotImplemented
	case errors.Is(err, control.ErrReloadFailed):
		k = probReloadFailed
	case errors.Is(err, lease.ErrClosed):
		k = probUnavailable
	}
	writeProblem(w, k, err.Error())
}
