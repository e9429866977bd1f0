package proxy

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/credproxy/credproxy/rules"
)

// proxyAuthHeader carries an agent's credentials to credproxy. It is
// hop-by-hop: httputil.ReverseProxy drops it, and identify deletes it too,
// so a client token never reaches an upstream.
const proxyAuthHeader = "Proxy-Authorization"

// identify names the caller of r, a CONNECT or an absolute-form request.
// Without `clients:` every caller is the sidecar's fixed identity. With it,
// r must carry Proxy-Authorization: Basic base64(NAME:TOKEN), which is what
// clients send for HTTPS_PROXY=http://NAME:TOKEN@host:port; otherwise the
// refusal is a 407 whose Proxy-Authenticate asks for it. The reason never
// says whether the name or the token was wrong: that would confirm names.
func (p *Proxy) identify(cfg *rules.Config, r *http.Request) (string, *refusal) {
	if !cfg.RequiresAuth() {
		return cfg.Identity, nil
	}
	h := r.Header.Get(proxyAuthHeader)
	r.Header.Del(proxyAuthHeader)
	if h == "" {
		return "", proxyAuthRequired(
			"proxy authentication required: set HTTPS_PROXY=http://NAME:TOKEN@host:port with a name and token from clients:")
	}
	user, pass, ok := parseBasic(h)
	if !ok {
		return "", proxyAuthRequired("proxy authentication failed: want Proxy-Authorization: Basic")
	}
	name, ok := cfg.Authenticate(user, pass)
	if !ok {
		return "", proxyAuthRequired("proxy authentication failed: unknown client or wrong token")
	}
	return name, nil
}

// parseBasic decodes a Basic credential (the scheme is case-insensitive).
func parseBasic(h string) (user, pass string, ok bool) {
	scheme, b64, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}
