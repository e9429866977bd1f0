package hostile

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoUpstream is a hostile upstream that reflects whatever credential it
// was sent, in every form the tests ask for.
type echoUpstream struct {
	mu       sync.Mutex
	lastAuth string // the last Authorization header it received
}

func (e *echoUpstream) handle(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if auth != "" {
		e.mu.Lock()
		e.lastAuth = auth
		e.mu.Unlock()
	}
	value := strings.TrimPrefix(auth, "Bearer ")
	path := r.URL.Path
	switch {
	case path == "/public/echo":
		e.mu.Lock()
		fmt.Fprintf(w, "earlier you sent %s", e.lastAuth)
		e.mu.Unlock()
	case path == "/v1/trailer":
		w.Header().Set("Trailer", "X-Echo")
		_, _ = w.Write([]byte("body first\n"))
		w.Header().Set("X-Echo", value)
	case path == "/v1/early-hints":
		w.Header().Set("Link", "</style.css?k="+value+">; rel=preload")
		w.Header().Set("X-Echo", value)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("X-Echo")
		_, _ = w.Write([]byte("ok"))
	case path == "/v1/upgrade":
		hj, _ := w.(http.Hijacker)
		c, brw, err := hj.Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = brw.WriteString("after the upgrade: " + value + "\n")
		_ = brw.Flush()
		time.Sleep(500 * time.Millisecond)
	case path == "/q/redirect":
		w.Header().Set("Location", "/next?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusFound)
		fmt.Fprintf(w, "moved to /next?%s", r.URL.RawQuery)
	case path == "/q/echo":
		fmt.Fprintf(w, "query was %s; key was %s", r.URL.RawQuery, r.URL.Query().Get("key"))
	case path == "/basic/userpass":
		_, pass, _ := r.BasicAuth()
		fmt.Fprintf(w, "agent:%s", pass)
	case path == "/basic/token":
		_, _ = w.Write([]byte(strings.TrimPrefix(auth, "Basic ")))
	case strings.HasPrefix(path, "/v1/form/"):
		for _, f := range secretForms(value) {
			if f.name == strings.TrimPrefix(path, "/v1/form/") {
				fmt.Fprintf(w, `{"echo":"xx%sxx"}`, f.text)
			}
		}
	case strings.HasPrefix(path, "/v1/enc/"):
		writeEncoded(w, strings.TrimPrefix(path, "/v1/enc/"), "the key is "+value)
	default:
		_, _ = w.Write([]byte("ok"))
	}
}

// writeEncoded labels the body with enc; deflate and gzip bodies are really
// compressed, br and zstd ones are only labelled.
func writeEncoded(w http.ResponseWriter, enc, body string) {
	var b bytes.Buffer
	switch enc {
	case "deflate":
		zw := zlib.NewWriter(&b)
		_, _ = zw.Write([]byte(body))
		_ = zw.Close()
	case "gzip", "x-gzip":
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(body))
		_ = zw.Close()
	default:
		b.WriteString(body)
	}
	w.Header().Set("Content-Encoding", enc)
	_, _ = w.Write(b.Bytes())
}

const maskRules = `  - name: query
    hosts: [%[1]s]
    paths: [/q/]
    credential: qkey
    inject: {query: key, value: "{{ .Value }}"}
  - name: basic
    hosts: [%[1]s]
    paths: [/basic/]
    credential: basic
    inject: {header: Authorization, value: '{{ basic "agent" .Value }}'}
`

func maskProc(t *testing.T) (*proc, *upstream) {
	e := &echoUpstream{}
	up := startUpstream(t, "127.77.5.1:0", true, true, e.handle)
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" +
		bearerRule("api", up.addr, "/v1/", "") + fmt.Sprintf(maskRules, up.addr)})
	return p, up
}

var allSecrets = []string{keyValue, basicValue, queryValue, "agent:" + basicValue}

// checkMasked fails if the bytes the agent received, or the body decoded
// from a compression label still on it, hold any form of a secret.
func checkMasked(t *testing.T, what string, resp *http.Response, body, raw []byte) {
	t.Helper()
	if l := leakIn(raw, allSecrets...); l != "" {
		t.Errorf("%s: expected a masked response or an error; the agent received %s", what, l)
	}
	if resp == nil {
		return
	}
	var r io.Reader
	var err error
	switch resp.Header.Get("Content-Encoding") {
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(body))
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(body))
	}
	if r != nil && err == nil {
		dec, _ := io.ReadAll(r)
		if l := leakIn(dec, allSecrets...); l != "" {
			t.Errorf("%s: the body the agent decoded from %s holds %s", what, resp.Header.Get("Content-Encoding"), l)
		}
	}
}

func TestMaskEchoedForms(t *testing.T) {
	p, up := maskProc(t)
	for _, f := range secretForms(keyValue) {
		t.Run(f.name, func(t *testing.T) {
			resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/v1/form/"+f.name))
			checkMasked(t, "upstream echoing the key as "+f.name, resp, body, raw)
		})
	}
}

func TestMaskCompressedBodies(t *testing.T) {
	p, up := maskProc(t)
	for _, enc := range []string{"gzip", "deflate", "x-gzip", "br", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/v1/enc/"+enc, "Accept-Encoding: "+enc))
			checkMasked(t, "body labelled "+enc, resp, body, raw)
		})
	}
}

func TestMaskPassthroughPath(t *testing.T) {
	p, up := maskProc(t)
	if resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/prime")); resp.StatusCode != 200 {
		t.Fatalf("priming request: expected 200, got %d %q", resp.StatusCode, trunc(body))
	}
	resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/public/echo"))
	checkMasked(t, "passthrough path echoing an earlier injected header", resp, body, raw)
}

func TestMaskTrailers(t *testing.T) {
	p, up := maskProc(t)
	resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/v1/trailer", "TE: trailers"))
	checkMasked(t, "HTTP trailer", resp, body, raw)
}

func TestMaskEarlyHints(t *testing.T) {
	p, up := maskProc(t)
	resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, "/v1/early-hints"))
	checkMasked(t, "103 Early Hints headers", resp, body, raw)
}

func TestMaskUpgradedStream(t *testing.T) {
	p, up := maskProc(t)
	a := p.tlsTunnel(t, up.addr, up.ip)
	a.write(t, "GET /v1/upgrade HTTP/1.1\r\nHost: "+up.addr+"\r\nAuthorization: Bearer placeholder\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, _, err := a.response(t)
	raw := a.rest(3 * time.Second)
	if err == nil {
		t.Logf("upgrade: status %d", resp.StatusCode)
	}
	checkMasked(t, "101-upgraded stream echoing the key", nil, nil, raw)
}

func TestMaskQueryRedirect(t *testing.T) {
	p, up := maskProc(t)
	for _, path := range []string{"/q/redirect?key=placeholder", "/q/echo?key=placeholder"} {
		resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, path))
		checkMasked(t, "query credential echoed by "+path, resp, body, raw)
	}
	if len(up.seen()) == 0 || !strings.Contains(up.seen()[0].URI, "key=") {
		t.Errorf("expected the query rule to inject key=; upstream saw %v", uris(up.seen()))
	}
}

func TestMaskBasicParts(t *testing.T) {
	p, up := maskProc(t)
	for _, path := range []string{"/basic/userpass", "/basic/token"} {
		resp, body, raw := p.roundTrip(t, up.addr, get(up.addr, path))
		checkMasked(t, "Basic credential echoed by "+path, resp, body, raw)
	}
	token := base64.StdEncoding.EncodeToString([]byte("agent:" + basicValue))
	for _, r := range up.seen() {
		if r.Header.Get("Authorization") != "Basic "+token {
			t.Errorf("expected Basic agent:<value> injected, upstream saw Authorization %q", r.Header.Get("Authorization"))
		}
	}
}

// TestMaskReasonPhrase: a raw upstream puts the key in the status line.
func TestMaskReasonPhrase(t *testing.T) {
	up := startRawUpstream(t, "127.77.5.2:0", true, func(c net.Conn, head string) {
		value := ""
		for _, line := range strings.Split(head, "\r\n") {
			if v, ok := strings.CutPrefix(line, "Authorization: Bearer "); ok {
				value = v
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 "+value+"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.tlsTunnel(t, up.addr, up.ip)
	a.write(t, get(up.addr, "/v1/x"))
	resp, body, _ := a.response(t)
	checkMasked(t, "reason phrase holding the key", resp, body, a.rest(2*time.Second))
}
