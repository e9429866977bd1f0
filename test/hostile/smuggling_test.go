package hostile

import (
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smuggleProc is a ruled upstream and a second, unruled-for-it host that
// nothing may reach.
func smuggleProc(t *testing.T, ip string) (*proc, *upstream, *upstream) {
	up := startUpstream(t, ip+":0", true, true, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/redirect" {
			http.Redirect(w, r, "https://"+r.Host+"/v1/followed", http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	other := okUpstream(t, "127.77.7.99:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" +
		bearerRule("api", up.addr, "", "") + bearerRule("other", other.addr, "", "")})
	return p, up, other
}

func TestDomainFrontingHostHeader(t *testing.T) {
	p, up, other := smuggleProc(t, "127.77.7.1")
	resp, body, _ := p.roundTrip(t, up.addr, get(other.addr, "/v1/x"))
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host %s inside CONNECT %s: expected 421, got %d %q", other.addr, up.addr, resp.StatusCode, trunc(body))
	}
	if n := len(up.seen()) + len(other.seen()); n != 0 {
		t.Errorf("expected nothing forwarded; upstreams saw %v %v", uris(up.seen()), uris(other.seen()))
	}
}

func TestDomainFrontingAbsoluteFormInTunnel(t *testing.T) {
	p, up, other := smuggleProc(t, "127.77.7.2")
	req := "GET https://" + other.addr + "/v1/x HTTP/1.1\r\nHost: " + up.addr + "\r\nAuthorization: Bearer placeholder\r\nConnection: close\r\n\r\n"
	resp, body, _ := p.roundTrip(t, up.addr, req)
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("absolute-form URL naming %s inside CONNECT %s: expected 421, got %d %q", other.addr, up.addr, resp.StatusCode, trunc(body))
	}
	if len(other.seen()) != 0 {
		t.Errorf("expected the other host never reached; it saw %v", uris(other.seen()))
	}
}

// TestDomainFrontingSNI: SNI names another host; credproxy still serves the
// CONNECT host's leaf and sends the request only there.
func TestDomainFrontingSNI(t *testing.T) {
	p, up, other := smuggleProc(t, "127.77.7.3")
	a := p.tunnel(t, up.addr)
	var leafIPs []net.IP
	tc := tls.Client(a.raw, &tls.Config{ServerName: "evil.example.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			leafIPs = cs.PeerCertificates[0].IPAddresses
			return nil
		}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS with SNI evil.example.test inside CONNECT %s: %v", up.addr, err)
	}
	if !slices.ContainsFunc(leafIPs, func(ip net.IP) bool { return ip.String() == up.ip }) {
		t.Errorf("SNI evil.example.test: expected the leaf for the CONNECT host %s, got IP SANs %v", up.ip, leafIPs)
	}
	a.conn = tc
	a.rec = &recConn{Conn: tc}
	a.br = newReader(a.rec)
	a.write(t, get(up.addr, "/v1/x"))
	if resp, body, err := a.response(t); err != nil || resp.StatusCode != 200 {
		t.Errorf("request after SNI evil.example.test: expected 200 from the CONNECT host, got %v %v %q", status(resp), err, trunc(body))
	}
	if len(up.seen()) != 1 || len(other.seen()) != 0 {
		t.Errorf("expected exactly one request at the CONNECT host and none elsewhere; saw %v and %v", uris(up.seen()), uris(other.seen()))
	}
}

// TestSmuggling sends ambiguous framings. credproxy parses each request with
// Go's net/http server and writes it upstream afresh, so the upstream never
// parses the agent's bytes: what it receives is what credproxy decided.
//   - two different Content-Lengths: 400, nothing forwarded;
//   - CL+TE: the body is the chunked one (RFC 9112 §6.3: Content-Length is
//     removed), and the request "smuggled" behind it is a request of its
//     own, decided on its own: naming another host, it gets 421 and reaches
//     no upstream;
//   - obs-fold and bare LF: the upstream receives one request with canonical
//     framing, never a header split into a second request.
func TestSmuggling(t *testing.T) {
	t.Run("two Content-Lengths", func(t *testing.T) {
		p, up, _ := smuggleProc(t, "127.77.7.4")
		a := p.tlsTunnel(t, up.addr, up.ip)
		a.write(t, "POST /v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello")
		resp, body, err := a.response(t)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("expected 400, got %v %v %q", status(resp), err, trunc(body))
		}
		if n := len(up.seen()); n != 0 {
			t.Errorf("expected no request upstream, it got %d: %v", n, uris(up.seen()))
		}
	})
	t.Run("CL+TE", func(t *testing.T) {
		p, up, other := smuggleProc(t, "127.77.7.5")
		a := p.tlsTunnel(t, up.addr, up.ip)
		smuggled := "GET /v1/smuggled HTTP/1.1\r\nHost: " + other.addr + "\r\nConnection: close\r\n\r\n"
		a.write(t, "POST /v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nContent-Length: "+strconv.Itoa(5+len(smuggled))+
			"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled)
		first, _, err := a.response(t)
		if err != nil || first.StatusCode != 200 {
			t.Fatalf("the chunked POST: expected 200, got %v %v", status(first), err)
		}
		second, body, err := a.response(t)
		if err != nil || second.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("the request behind it, naming %s: expected 421, got %v %v %q", other.addr, status(second), err, trunc(body))
		}
		seen := up.seen()
		if len(seen) != 1 || seen[0].URI != "/v1/x" || seen[0].Body != "" || len(other.seen()) != 0 {
			t.Errorf("expected one POST /v1/x with an empty body at %s and nothing at %s; saw %v (body %q) and %v",
				up.addr, other.addr, uris(seen), bodies(seen), uris(other.seen()))
		}
	})
	for name, req := range map[string]func(h string) string{
		"obs-fold": func(h string) string {
			return "GET /v1/x HTTP/1.1\r\nHost: " + h + "\r\nX-Folded: a\r\n GET /v1/split HTTP/1.1\r\nConnection: close\r\n\r\n"
		},
		"bare LF": func(h string) string {
			return "GET /v1/x HTTP/1.1\nHost: " + h + "\nX-Lf: a\rGET /v1/split HTTP/1.1\nConnection: close\n\n"
		},
	} {
		t.Run(name, func(t *testing.T) {
			p, up, _ := smuggleProc(t, "127.77.7.6")
			a := p.tlsTunnel(t, up.addr, up.ip)
			a.write(t, req(up.addr))
			resp, body, err := a.response(t)
			a.rest(2 * time.Second)
			if err == nil && resp.StatusCode != 200 && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("expected 200 (parsed and re-framed) or 400, got %v %q", status(resp), trunc(body))
			}
			for _, r := range up.seen() {
				if r.URI != "/v1/x" {
					t.Errorf("the upstream parsed a second request out of a header: %v", uris(up.seen()))
				}
			}
			if n := len(up.seen()); n > 1 {
				t.Errorf("expected at most one request upstream, got %d: %v", n, uris(up.seen()))
			}
		})
	}
}

func bodies(rs []seenReq) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Body)
	}
	return out
}

func TestPipelinedHostSwitch(t *testing.T) {
	p, up, other := smuggleProc(t, "127.77.7.5")
	a := p.tlsTunnel(t, up.addr, up.ip)
	a.write(t, "GET /v1/a HTTP/1.1\r\nHost: "+up.addr+"\r\n\r\nGET /v1/b HTTP/1.1\r\nHost: "+other.addr+"\r\nConnection: close\r\n\r\n")
	first, _, err := a.response(t)
	if err != nil || first.StatusCode != 200 {
		t.Errorf("first pipelined request: expected 200, got %v %v", status(first), err)
	}
	second, body, err := a.response(t)
	if err != nil || second.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("second pipelined request with Host %s: expected 421, got %v %v %q", other.addr, status(second), err, trunc(body))
	}
	if len(other.seen()) != 0 || len(up.seen()) != 1 {
		t.Errorf("expected one request at %s and none at %s; saw %v and %v", up.addr, other.addr, uris(up.seen()), uris(other.seen()))
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	p, up, _ := smuggleProc(t, "127.77.7.6")
	resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/redirect"))
	if resp.StatusCode != http.StatusFound {
		t.Errorf("upstream 302: expected it returned to the agent, got %d %q", resp.StatusCode, trunc(body))
	}
	if got := uris(up.seen()); len(got) != 1 {
		t.Errorf("expected the upstream to see only the first request (no redirect followed), saw %v", got)
	}
}

func TestMethodsConnectTraceInTunnel(t *testing.T) {
	p, up, _ := smuggleProc(t, "127.77.7.7")
	for _, req := range []string{
		"CONNECT " + up.addr + " HTTP/1.1\r\nHost: " + up.addr + "\r\nAuthorization: Bearer placeholder\r\n\r\n",
		"TRACE /v1/x HTTP/1.1\r\nHost: " + up.addr + "\r\nAuthorization: Bearer placeholder\r\nConnection: close\r\n\r\n",
	} {
		a := p.tlsTunnel(t, up.addr, up.ip)
		a.write(t, req)
		resp, body, err := a.response(t)
		if err != nil || (resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusMethodNotAllowed) {
			t.Errorf("%s inside a tunnel: expected 403 or 405, got %v %v %q", firstLine(req), status(resp), err, trunc(body))
		}
		a.close()
	}
	if len(up.seen()) != 0 {
		t.Errorf("expected CONNECT and TRACE never forwarded; upstream saw %v", uris(up.seen()))
	}
}

func TestHostNormalised(t *testing.T) {
	p, up, _ := smuggleProc(t, "127.77.7.8")
	resp, body, _ := p.roundTrip(t, up.addr, get(up.ip+".:"+up.port, "/v1/x"))
	if resp.StatusCode != 200 {
		t.Errorf("Host %s.:%s: expected 200 (same host, normalised), got %d %q", up.ip, up.port, resp.StatusCode, trunc(body))
	}
	for _, r := range up.seen() {
		if r.Host != up.addr {
			t.Errorf("expected the upstream to see the normalised Host %q, it saw %q", up.addr, r.Host)
		}
	}
}

func TestNoUserAgentAdded(t *testing.T) {
	p, up, _ := smuggleProc(t, "127.77.7.9")
	if resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/x")); resp.StatusCode != 200 {
		t.Fatalf("expected 200, got %d %q", resp.StatusCode, trunc(body))
	}
	for _, r := range up.seen() {
		if ua, ok := r.Header["User-Agent"]; ok {
			t.Errorf("agent sent no User-Agent: expected none upstream, it saw %q", ua)
		}
	}
}

// TestCredentialWithCRLF: a value that would split the header is refused.
func TestCredentialWithCRLF(t *testing.T) {
	up := okUpstream(t, "127.77.7.10:0")
	evil := "sk-test-hostile-crlf\r\nX-Evil: 1"
	p := startProc(t, procOpts{Env: map[string]string{"HOSTILE_KEY": evil}, YAML: "credentials:\n  key: {source: env, env: HOSTILE_KEY}\nrules:\n" + bearerRule("api", up.addr, "", "")})
	resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/x"))
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("credential holding CR LF: expected 502, got %d %q", resp.StatusCode, trunc(body))
	}
	for _, r := range up.seen() {
		if r.Header.Get("X-Evil") != "" || strings.Contains(r.Header.Get("Authorization"), "crlf") {
			t.Errorf("credential holding CR LF reached the upstream: headers %v", r.Header)
		}
	}
}

func status(r *http.Response) any {
	if r == nil {
		return "no response"
	}
	return r.StatusCode
}
