package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminOptions configures NewAdminHandler.
type AdminOptions struct {
	Metrics *Metrics // served at /metrics; nil serves an empty registry
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
	// Extra routes are mounted as given (http.ServeMux patterns), behind the
	// Token check. A pattern that conflicts with a built-in route panics, as
	// ServeMux.Handle does.
	Extra map[string]http.Handler
	// Token guards every route but the open read-only ones (/metrics,
	// /healthz, /readyz, /ca.pem): a request must carry "Authorization:
	// Bearer <Token>". Empty means those routes answer 403: the agent may
	// reach the admin port, and must not list or revoke leases.
	Token string
}

// NewAdminHandler returns the admin HTTP handler: /metrics, /healthz,
// /readyz, /ca.pem, optionally /debug/pprof/, and o.Extra. Any other path
// answers 404 with a JSON body. Every route but the four open ones requires
// o.Token (see AdminOptions.Token).
func NewAdminHandler(o AdminOptions) http.Handler {
	mux := http.NewServeMux()
	m := o.Metrics
	if m == nil {
		m = New()
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", readyHandler(o.Ready))
	mux.HandleFunc("/ca.pem", caHandler(o.CAPEM))
	guard := bearer(o.Token)
	if o.Pprof {
		mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	}
	for pattern, h := range o.Extra {
		mux.Handle(pattern, guard(h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	return mux
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
				writeJSON(w, http.StatusForbidden, map[string]string{
					"error": "admin API disabled: admin.tokenFile is not configured"})
				return
			}
			auth := r.Header.Get("Authorization")
			scheme, got, ok := strings.Cut(auth, " ")
			sum := sha256.Sum256([]byte(got))
			if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="credproxy admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong admin token"})
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
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no CA certificate"})
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
