// Package admin is credproxy's one admin HTTP server: routing, the bearer
// token check, JSON answers and RFC 9457 problem errors. The read-only routes
// (/metrics, /healthz, /readyz, /ca.pem) are open; every other route (the
// control API of internal/control, its MCP tools at /mcp, pprof) needs the
// admin token. It holds no
// logic of its own beyond HTTP: the control API does the work.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/metrics"
)

// Options configures New.
type Options struct {
	Metrics *metrics.Metrics // served at /metrics; nil serves an empty registry
	// Ready reports readiness for /readyz: nil error is ready (200), any
	// other answers 503 with the error text. A nil Ready is always ready.
	Ready func() error
	// CAPEM returns the public CA certificate in PEM form for /ca.pem; nil
	// (or no CERTIFICATE block) answers 404.
	CAPEM func() []byte
	// Pprof mounts net/http/pprof under /debug/pprof/. Off by default: a
	// profile shows memory and arguments, and the admin port may be reachable
	// by the agent.
	Pprof bool
	// Control serves the control API routes (/tasks, /leases, /credentials,
	// /explain, /-/reload); nil leaves them out (404).
	Control *control.Control
	// Version is credproxy's version, which the MCP server at /mcp reports.
	Version string
	// Token guards every route but the open read-only ones (/metrics,
	// /healthz, /readyz, /ca.pem): a request must carry "Authorization:
	// Bearer <Token>". Empty means those routes answer 403: the agent may
	// reach the admin port, and must not list or revoke leases.
	Token string
}

// New returns the admin HTTP handler. Any path it does not know answers 404,
// and a known path with another method 405, both as problem details.
func New(o Options) http.Handler {
	r := &router{mux: http.NewServeMux(), guard: bearer(o.Token)}
	r.open("GET /metrics", o.Metrics.Handler())
	r.open("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	r.open("GET /readyz", readyHandler(o.Ready))
	r.open("GET /ca.pem", caHandler(o.CAPEM))
	if o.Pprof {
		r.mux.Handle("/debug/pprof/", r.guard(http.HandlerFunc(pprof.Index)))
		r.mux.Handle("/debug/pprof/cmdline", r.guard(http.HandlerFunc(pprof.Cmdline)))
		r.mux.Handle("/debug/pprof/profile", r.guard(http.HandlerFunc(pprof.Profile)))
		r.mux.Handle("/debug/pprof/symbol", r.guard(http.HandlerFunc(pprof.Symbol)))
		r.mux.Handle("/debug/pprof/trace", r.guard(http.HandlerFunc(pprof.Trace)))
	}
	if o.Control != nil {
		controlRoutes(r, o.Control)
		mcpRoute(r, o.Control, o.Version)
	}
	r.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, probNotFound, "not found")
	})
	return r.mux
}

// router registers "METHOD /path" routes and answers 405 (with Allow) to
// the other methods on the same path.
type router struct {
	mux     *http.ServeMux
	guard   func(http.Handler) http.Handler
	allowed map[string][]string // path pattern → methods
}

// open registers a route that needs no token.
func (r *router) open(pattern string, h http.Handler) { r.handle(pattern, h) }

// authed registers a route behind the token check.
func (r *router) authed(pattern string, h http.HandlerFunc) { r.handle(pattern, r.guard(h)) }

func (r *router) handle(pattern string, h http.Handler) {
	method, path, _ := strings.Cut(pattern, " ")
	r.mux.Handle(pattern, h)
	if r.allowed == nil {
		r.allowed = map[string][]string{}
	}
	if _, seen := r.allowed[path]; !seen {
		r.mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", strings.Join(r.allowed[path], ", "))
			writeProblem(w, probMethodNotAllowed, "allowed: "+strings.Join(r.allowed[path], ", "))
		})
	}
	r.allowed[path] = append(r.allowed[path], method)
	if method == http.MethodGet {
		r.allowed[path] = append(r.allowed[path], http.MethodHead)
	}
}

// bearer returns the one auth check of the admin server. A prompt-injected
// agent that can reach the port must not list or revoke leases in a loop.
func bearer(token string) func(http.Handler) http.Handler {
	// Compare digests: subtle.ConstantTimeCompare returns early on a length
	// mismatch, which would tell an attacker the token's length.
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if token == "" {
				writeProblem(w, probAdminDisabled, "admin API disabled: admin.tokenFile is not configured")
				return
			}
			scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			sum := sha256.Sum256([]byte(got))
			if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="credproxy admin"`)
				writeProblem(w, probUnauthorized, "missing or wrong admin token")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func readyHandler(ready func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// caHandler serves only the CERTIFICATE blocks of caPEM: a cert+key bundle
// passed by mistake must not hand the CA key to every client of the admin port.
func caHandler(caPEM func() []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var certs []byte
		if caPEM != nil {
			certs = certificatesOnly(caPEM())
		}
		if len(certs) == 0 {
			writeProblem(w, probNotFound, "no CA certificate")
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(certs)
	}
}

// certificatesOnly re-encodes the CERTIFICATE blocks of data and drops
// everything else (keys, other blocks, text between blocks).
func certificatesOnly(data []byte) []byte {
	var out []byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: b.Bytes})...)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
