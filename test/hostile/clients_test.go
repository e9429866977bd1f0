package hostile

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// recConn records every byte read from a connection into a buffer: the
// test asserts on exactly what the agent received.
type recConn struct {
	net.Conn
	got bytes.Buffer
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.got.Write(b[:n])
	return n, err
}

// agentConn is one agent connection to the proxy, raw or inside a tunnel.
type agentConn struct {
	p    *proc
	raw  net.Conn // the TCP connection to the proxy
	conn net.Conn // what the agent talks over (raw or TLS)
	rec  *recConn
	br   *bufio.Reader
	name string
}

// dialProxy opens a plain connection to the proxy listener.
func (p *proc) dialProxy(t *testing.T) *agentConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial proxy %s: %v", p.proxyAddr, err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	a := &agentConn{p: p, raw: c, conn: c, name: "plain connection"}
	a.rec = &recConn{Conn: c}
	a.br = bufio.NewReader(a.rec)
	t.Cleanup(func() { a.close() })
	return a
}

// connect sends CONNECT authority and returns the proxy's answer; on 200
// the connection is a tunnel.
func (p *proc) connect(t *testing.T, authority string) (*agentConn, *http.Response, []byte) {
	t.Helper()
	a := p.dialProxy(t)
	a.name = "CONNECT " + authority
	fmt.Fprintf(a.conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	resp, err := http.ReadResponse(a.br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT %s: reading the proxy's answer: %v", authority, err)
	}
	var body []byte
	if resp.StatusCode != 200 {
		body, _ = io.ReadAll(resp.Body)
		a.record()
	}
	return a, resp, body
}

// tunnel is connect that requires a 200, with no TLS yet.
func (p *proc) tunnel(t *testing.T, authority string) *agentConn {
	t.Helper()
	a, resp, body := p.connect(t, authority)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: expected 200, got %d %q", authority, resp.StatusCode, trunc(body))
	}
	return a
}

// tlsTunnel is a CONNECT followed by a TLS handshake that trusts
// credproxy's CA, with serverName as SNI and verified name.
func (p *proc) tlsTunnel(t *testing.T, authority, serverName string) *agentConn {
	t.Helper()
	a := p.tunnel(t, authority)
	tc := tls.Client(a.raw, &tls.Config{RootCAs: p.caPool(t), ServerName: serverName, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS through CONNECT %s (SNI %q): %v", authority, serverName, err)
	}
	a.conn = tc
	a.rec = &recConn{Conn: tc}
	a.br = bufio.NewReader(a.rec)
	return a
}

func (p *proc) caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatalf("read credproxy CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

func (a *agentConn) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(a.conn, s); err != nil {
		t.Fatalf("%s: write: %v", a.name, err)
	}
}

// response reads one final response (skipping 1xx) and its body.
func (a *agentConn) response(t *testing.T) (*http.Response, []byte, error) {
	t.Helper()
	resp, body, err := readHead(a.br)
	a.record()
	return resp, body, err
}

// rest reads until EOF or the deadline and returns every byte received on
// this connection so far.
func (a *agentConn) rest(d time.Duration) []byte {
	_ = a.conn.SetReadDeadline(time.Now().Add(d))
	_, _ = io.Copy(io.Discard, a.br)
	a.record()
	return a.rec.got.Bytes()
}

func (a *agentConn) record() { a.p.recordAs(a, a.name, a.rec.got.Bytes()) }

func (a *agentConn) close() {
	a.record()
	a.conn.Close()
	a.raw.Close()
}

// roundTrip sends one raw request inside a TLS tunnel to authority and
// returns the parsed response and all bytes received.
func (p *proc) roundTrip(t *testing.T, authority, req string) (*http.Response, []byte, []byte) {
	t.Helper()
	host, _, _ := net.SplitHostPort(authority)
	a := p.tlsTunnel(t, authority, host)
	a.write(t, req)
	resp, body, err := a.response(t)
	if err != nil {
		t.Fatalf("%s: reading the response to %q: %v (received %q)", authority, firstLine(req), err, trunc(a.rec.got.Bytes()))
	}
	a.close()
	return resp, body, a.rec.got.Bytes()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// get builds a raw GET with a placeholder Authorization and Connection: close.
func get(authority, path string, extra ...string) string {
	h := ""
	for _, e := range extra {
		h += e + "\r\n"
	}
	return "GET " + path + " HTTP/1.1\r\nHost: " + authority + "\r\nAuthorization: Bearer placeholder\r\n" + h + "Connection: close\r\n\r\n"
}

// httpClient is a Go agent with the proxy set, trusting credproxy's CA.
func (p *proc) httpClient(t *testing.T) *http.Client {
	t.Helper()
	u, _ := url.Parse("http://" + p.proxyAddr)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: p.caPool(t)},
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do runs req through the Go agent and records what came back.
func (p *proc) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := p.httpClient(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s through credproxy: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var head bytes.Buffer
	_ = resp.Header.Write(&head)
	p.record("go client "+req.URL.String(), append(head.Bytes(), body...))
	return resp, body
}

// curl runs curl through the proxy and returns the status and body.
func (p *proc) curl(t *testing.T, args ...string) (int, []byte) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is required (scripts/test.sh installs it): %v", err)
	}
	all := append([]string{"-sS", "--max-time", "30", "-x", "http://" + p.proxyAddr, "--cacert", p.caFile,
		"-o", "-", "-w", "\n%{http_code}"}, args...)
	cmd := exec.Command(bin, all...)
	cmd.Env = childEnv(nil)
	out, err := cmd.Output()
	p.record("curl "+strings.Join(args, " "), out)
	i := bytes.LastIndexByte(out, '\n')
	var code int
	if i < 0 {
		t.Fatalf("curl %v: %v, output %q", args, err, out)
	}
	fmt.Sscanf(string(out[i+1:]), "%d", &code)
	return code, out[:i]
}

// python runs a Python requests script with the proxy and CA in its
// environment and returns its output.
func (p *proc) python(t *testing.T, script string) string {
	t.Helper()
	bin := os.Getenv("CREDPROXY_PYTHON")
	if bin == "" {
		bin = "python3"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s with requests is required (scripts/test.sh installs it): %v", bin, err)
	}
	cmd := exec.Command(path, "-c", script)
	cmd.Env = append(childEnv(nil), "HTTPS_PROXY=http://"+p.proxyAddr, "HTTP_PROXY=http://"+p.proxyAddr,
		"REQUESTS_CA_BUNDLE="+p.caFile, "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	p.record("python requests", out)
	if err != nil {
		t.Fatalf("python requests: %v:\n%s", err, out)
	}
	return string(out)
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// tlsClient starts TLS over c trusting credproxy's CA, for helpers that
// run off the test goroutine (no t.Fatal there).
func tlsClient(c net.Conn, p *proc, host string) *tls.Conn {
	p.poolOnce.Do(func() {
		p.pool = x509.NewCertPool()
		if pem, err := os.ReadFile(p.caFile); err == nil {
			p.pool.AppendCertsFromPEM(pem)
		}
	})
	return tls.Client(c, &tls.Config{RootCAs: p.pool, ServerName: host, NextProtos: []string{"http/1.1"}})
}
