package hostile

import (
	"fmt"
	"html"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const vaultToken = "hvs.test-hostile-token-9e2c4b71a0d3f5"

// startFakeVault is a fake Vault, not a real one: a loopback HTTP server
// that answers everything with a 502 HTML page quoting every request
// header, X-Vault-Token included, as a misconfigured gateway in front of a
// store would.
func startFakeVault(t *testing.T) *upstream {
	return startUpstream(t, "127.77.6.1:0", false, true, func(w http.ResponseWriter, r *http.Request) {
		var keys []string
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("<html><body><h1>502 Bad Gateway</h1><p>request " + html.EscapeString(r.Method+" "+r.RequestURI) + "</p><pre>")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
		}
		b.WriteString("</pre></body></html>")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(b.String()))
	})
}

// TestStoreErrorsNotEchoed: a store error page that quotes the Vault token
// reaches neither the agent, the logs nor the audit; the agent's 502 names
// the credential.
func TestStoreErrorsNotEchoed(t *testing.T) {
	vault := startFakeVault(t)
	up := okUpstream(t, "127.77.6.2:0")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	writeFile(t, tokenFile, vaultToken+"\n")
	yaml := fmt.Sprintf(`sources:
  vault: {type: vault, address: "http://%s", auth: {method: token, tokenFile: %s}}
credentials:
  key: {source: env, env: HOSTILE_KEY}
  kv-hostile: {source: vault, path: secret/data/hostile, field: apikey}
rules:
  - name: kv
    hosts: [%s]
    credential: kv-hostile
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`, vault.addr, tokenFile, up.addr)
	p := startProc(t, procOpts{Env: map[string]string{"HOSTILE_KEY": keyValue}, Secrets: []string{vaultToken}, YAML: yaml})
	resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/v1/x"))
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("credential from a failing store: expected 502, got %d %q", resp.StatusCode, trunc(body))
	}
	if msg := jsonErrorBody(t, "store failure", resp.StatusCode, resp.Header, body); !strings.Contains(msg, "kv-hostile") {
		t.Errorf("store failure: expected the error to name credential \"kv-hostile\", got %q", msg)
	}
	if l := leakIn(raw, vaultToken); l != "" {
		t.Errorf("store failure: the agent received the Vault token: %s", l)
	}
	if len(vault.seen()) == 0 {
		t.Errorf("expected credproxy to call the fake Vault; it saw no request")
	}
	if len(up.seen()) != 0 {
		t.Errorf("expected nothing forwarded without a credential; upstream saw %v", uris(up.seen()))
	}
	// stdout, stderr and the admin bodies are scanned for the token when
	// the process stops (procOpts.Secrets).
}
