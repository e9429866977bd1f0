package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h2Client is an agent that speaks HTTP/2 inside its CONNECT tunnels. It
// counts the TCP connections it opens to the proxy.
func (e *env) h2Client(roots *x509.CertPool, dials *atomic.Int64) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(e.url),
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
	}, Timeout: 30 * time.Second}
}

// An HTTP/2 agent goes through the same pipeline as an HTTP/1.1 one: the
// credential is injected, and an echo of it is masked.
func TestH2AgentInjectsAndMasks(t *testing.T) {
	e, _, up, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "you sent %s", r.Header.Get("Authorization"))
	})
	req, _ := http.NewRequest("GET", "https://echo.example.test/headers", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	resp, err := e.h2Client(e.ca, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
		t.Fatalf("agent spoke %s (ALPN %q), want HTTP/2", resp.Proto, resp.TLS.NegotiatedProtocol)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %q, want 200", resp.StatusCode, body)
	}
	got := up.seen()
	if len(got) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(got))
	}
	if a := got[0].Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+testKey {
		t.Errorf("upstream Authorization = %q, want exactly [Bearer %s]", a, testKey)
	}
	if strings.Contains(string(body), testKey) || strings.Contains(resp.Header.Get("X-Echo"), testKey) {
		t.Errorf("credential reached the HTTP/2 agent: header %q body %q", resp.Header.Get("X-Echo"), body)
	}
	if !strings.Contains(string(body), "[redacted]") {
		t.Errorf("body %q should carry the mask", body)
	}
	if !strings.Contains(e.audit.String(), `"event":"lease.created"`) {
		t.Errorf("audit has no lease.created: %s", e.audit.String())
	}
}

// A stream whose :authority differs from the CONNECT target is domain
// fronting, over HTTP/2 as over HTTP/1.1.
func TestH2AuthorityMismatchIsMisdirected(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	// The connection is a tunnel to api.example.test; the stream asks for
	// echo.example.test (req.Host is the :authority).
	req, _ := http.NewRequest("GET", "https://api.example.test/v1/models", nil)
	req.Host = "echo.example.test"
	req.Header.Set("Authorization", "Bearer placeholder")
	resp, err := e.h2Client(e.ca, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("agent spoke %s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", resp.StatusCode)
	}
	if msg, _ := jsonError(t, resp.Body); !strings.Contains(msg, "api.example.test:443") {
		t.Errorf("error %q should name the CONNECT target", msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests after an :authority mismatch, want 0", n)
	}
}

// Trailers are masked over HTTP/2 too.
func TestH2TrailersAreMasked(t *testing.T) {
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/prime":
			_, _ = io.WriteString(w, "ok")
		default:
			w.Header().Set("Trailer", "X-Echo")
			_, _ = io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Echo", testKey)
		}
	})
	c := e.h2Client(e.ca, nil)
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := c.Get("https://api.example.test" + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s: agent spoke %s, want HTTP/2", path, resp.Proto)
		}
		return resp
	}
	if resp := get("/v1/prime"); resp.StatusCode != 200 {
		t.Fatalf("priming request: status %d", resp.StatusCode)
	}
	resp := get("/other/trailer")
	if v := resp.Trailer.Get("X-Echo"); strings.Contains(v, testKey) || v == "" {
		t.Errorf("trailer X-Echo = %q, want it present and masked", v)
	}
}

// A client that offers only http/1.1 still gets HTTP/1.1.
func TestHTTP1OnlyAgentGetsHTTP1(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	resp, err := e.client(e.ca).Get("https://api.example.test/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
		t.Fatalf("got %d over %s, want 200 over HTTP/1.1", resp.StatusCode, resp.Proto)
	}
	if resp.TLS.NegotiatedProtocol == "h2" {
		t.Errorf("ALPN chose h2 for a client that did not offer it")
	}
	// By hand, offering only http/1.1 in ALPN.
	c, _, cr := rawConnect(t, e, "api.example.test:443")
	if cr.StatusCode != 200 {
		t.Fatalf("CONNECT status %d", cr.StatusCode)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "api.example.test", RootCAs: e.ca, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", p)
	}
	if a := up.seen()[0].Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("upstream Authorization = %q over HTTP/1.1", a)
	}
}

// Many streams at once on one HTTP/2 connection all go through: the
// upstream holds every request until all have arrived, so they are
// concurrent.
func TestH2ManyConcurrentStreamsOnOneConnection(t *testing.T) {
	const n = 32
	var arrived sync.WaitGroup
	arrived.Add(n + 1) // + the request that opens the connection
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	e, _, up, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/open" {
			arrived.Done()
			<-release
		} else {
			arrived.Done()
		}
		fmt.Fprintf(w, "ok %s", r.URL.Query().Get("i"))
	})
	var dials atomic.Int64
	c := e.h2Client(e.ca, &dials)
	resp, err := c.Get("https://api.example.test/v1/open")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("agent spoke %s, want HTTP/2", resp.Proto)
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			resp, err := c.Get(fmt.Sprintf("https://api.example.test/v1/stream?i=%d", i))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(body) != fmt.Sprintf("ok %d", i) {
				errs <- fmt.Errorf("stream %d: %d over %s: %q", i, resp.StatusCode, resp.Proto, body)
				return
			}
			errs <- nil
		}()
	}
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	ok := waitOrErr(t, all, "every stream to reach the upstream at once")
	unblock()
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if !ok {
		t.FailNow()
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("agent opened %d connections to the proxy, want 1", d)
	}
	for _, r := range up.seen() {
		if a := r.Header.Get("Authorization"); a != "Bearer "+testKey {
			t.Errorf("%s: upstream Authorization = %q", r.URL, a)
		}
	}
}

// Drain lets an HTTP/2 stream in flight finish: its connection ends by
// GOAWAY, not by a Connection header HTTP/2 does not have.
func TestH2DrainFinishesStreamInFlight(t *testing.T) {
	got := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		close(got)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	c := e.h2Client(e.ca, nil)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://api.example.test/v1/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp: resp, body: string(body)}
	}()
	waitOrFail(t, got, "the upstream to receive the request")
	drained := make(chan error, 1)
	go func() { drained <- e.px.Drain(context.Background()) }()
	unblock()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.StatusCode != 200 || r.resp.ProtoMajor != 2 || r.body != "done" {
		t.Fatalf("got %d over %s %q, want 200 over HTTP/2 done", r.resp.StatusCode, r.resp.Proto, r.body)
	}
	done := make(chan struct{})
	var derr error
	go func() { derr = <-drained; close(done) }()
	waitOrFail(t, done, "Drain to return")
	if derr != nil {
		t.Errorf("Drain: %v", derr)
	}
}

// Trailers nobody announced (as gRPC servers send them) are masked too: the
// transport creates their map only at the end of the body.
func TestUnannouncedTrailersAreMasked(t *testing.T) {
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Echo", r.Header.Get("Authorization"))
	})
	for _, h2 := range []bool{false, true} {
		c := e.client(e.ca)
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = h2
		resp, err := c.Get("https://echo.example.test/x")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if v := resp.Trailer.Get("X-Echo"); v == "" || strings.Contains(v, testKey) {
			t.Errorf("h2=%v: unannounced trailer X-Echo = %q, want it present and masked", h2, v)
		}
	}
}
