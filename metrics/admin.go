package metrics

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/pprof"

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
	// Extra routes are mounted as given (http.ServeMux patterns). A pattern
	// that conflicts with a built-in route panics, as ServeMux.Handle does.
	Extra map[string]http.Handler
}

// NewAdminHandler returns the admin HTTP handler: /metrics, /healthz,
// /readyz, /ca.pem, optionally /debug/pprof/, and o.Extra. Any other path
// answers 404 with a JSON body.
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
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	for pattern, h := range o.Extra {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	})
	return mux
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
