package admin

import (
	"net/http"
	"strings"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/mcpserver"
)

// mcpRoute mounts the control API's MCP server at /mcp behind the token.
// Every method (POST, GET, DELETE) goes to the SDK's handler, which also
// refuses a non-loopback Host header on a loopback listener (DNS
// rebinding: a web page must not drive the tools through the agent's
// browser) and bounds the body.
func mcpRoute(r *router, c *control.Control, version string) {
	s := mcpserver.New(mcpserver.Local(c), mcpserver.Options{Version: version})
	r.mux.Handle("/mcp", r.guard(sdkProblems(mcpserver.Handler(s))))
}

// sdkStatusKinds are the problem kinds of the MCP SDK's plain-text HTTP
// errors; a status not here passes through as the SDK wrote it.
var sdkStatusKinds = map[int]*kind{
	http.StatusBadRequest:            probBadRequest,
	http.StatusForbidden:             probHostRefused,
	http.StatusNotFound:              probNotFound,
	http.StatusMethodNotAllowed:      probMethodNotAllowed,
	http.StatusRequestEntityTooLarge: probTooLarge,
	http.StatusUnsupportedMediaType:  probUnsupportedType,
}

// sdkProblems answers the SDK's plain-text HTTP errors (a refused Host
// header, a body over the bound, a wrong Content-Type) as problem details,
// like every other admin error. JSON-RPC answers pass untouched.
func sdkProblems(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		pw := &problemWriter{ResponseWriter: w}
		next.ServeHTTP(pw, req)
		if pw.kind != nil {
			for _, h := range []string{"Content-Type", "X-Content-Type-Options", "Content-Length"} {
				w.Header().Del(h)
			}
			if pw.kind == probMethodNotAllowed {
				w.Header().Set("Allow", http.MethodPost) // stateless: no GET stream, no session to DELETE
			}
			writeProblem(w, pw.kind, strings.TrimSpace(string(pw.detail)))
		}
	})
}

// problemWriter holds back an error the SDK writes with http.Error.
type problemWriter struct {
	http.ResponseWriter
	kind   *kind // the error held back; nil: passing through
	detail []byte
}

// maxDetailBytes bounds the SDK's error text kept as a problem's detail.
const maxDetailBytes = 512

func (p *problemWriter) WriteHeader(code int) {
	if k := sdkStatusKinds[code]; k != nil && strings.HasPrefix(p.Header().Get("Content-Type"), "text/plain") {
		p.kind = k
		return
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *problemWriter) Write(b []byte) (int, error) {
	if p.kind == nil {
		return p.ResponseWriter.Write(b)
	}
	if room := maxDetailBytes - len(p.detail); room > 0 {
		p.detail = append(p.detail, b[:min(len(b), room)]...)
	}
	return len(b), nil
}

// Unwrap lets http.ResponseController flush the SDK's event streams.
func (p *problemWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
