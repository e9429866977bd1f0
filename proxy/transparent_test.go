package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/proxy"
)

// Transparent interception without iptables: a listener hands each
// connection to ServeRedirectedConn with the original destination a redirect
// would have recorded (the netns tests in deploy/ run the real thing).

// redirected serves connections accepted on a new 127.0.0.1 listener as if
// iptables had redirected them from orig; it returns the listener's address.
func redirected(t *testing.T, e *env, orig netip.AddrPort) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.px.ServeRedirectedConn(c, orig)
		}
	}()
	return ln.Addr().String()
}

// directClient is an agent with no proxy settings whose every connection
// lands on addr, as a redirect would make it.
func directClient(addr string, roots *x509.CertPool) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
}

func (e *env) route(from, to string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.routes[from] = to
}

func (e *env) hasDialled(addr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.dialled, addr)
}

func lastAuth(u *upstream) string {
	seen := u.seen()
	if len(seen) == 0 {
		return "(no request)"
	}
	return seen[len(seen)-1].Header.Get("Authorization")
}

func TestTransparentInterceptsRuledSNI(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	// The agent dialled some IP; credproxy must dial the SNI name itself.
	orig := netip.MustParseAddrPort("192.0.2.10:443")
	addr := redirected(t, e, orig)
	req, _ := http.NewRequest("GET", "https://api.example.test/v1/models", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	resp, err := directClient(addr, e.ca).Do(req)
	if err != nil {
		t.Fatalf("a ruled host through the transparent listener, trusting credproxy's CA: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("status %d %q, want 200 ok", resp.StatusCode, body)
	}
	if got := lastAuth(up); got != "Bearer "+testKey {
		t.Errorf("upstream saw Authorization %q, want the injected credential", got)
	}
	if !e.hasDialled("api.example.test:443") || e.hasDialled(orig.String()) {
		t.Errorf("credproxy dialled %v; want the SNI name api.example.test:443, never the original IP %s", e.dialled, orig)
	}
}

func TestTransparentFrontingRefused(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	addr := redirected(t, e, netip.MustParseAddrPort("192.0.2.10:443"))
	// SNI api.example.test (ruled), Host other.example.test: the credential
	// for the SNI host must not reach the other one.
	req, _ := http.NewRequest("GET", "https://api.example.test/v1/models", nil)
	req.Host = "other.example.test"
	resp, err := directClient(addr, e.ca).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("status %d, want 421", resp.StatusCode)
	}
	refusedAs(t, resp, "misdirected")
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
}

func TestTransparentSplicesUnruled(t *testing.T) {
	e, p, up, plain := newEnv(t, "", okHandler)
	orig := netip.MustParseAddrPort("192.0.2.10:443")
	e.route(orig.String(), addrOf(up.Server))
	addr := redirected(t, e, orig)
	// An unruled name is spliced: the agent verifies the upstream's own
	// certificate, with the upstream CA only.
	resp, err := directClient(addr, p.pool).Get("https://other.example.test/v1/models")
	if err != nil {
		t.Fatalf("an unruled host, spliced, with the upstream's own CA: %v", err)
	}
	resp.Body.Close()
	if got := lastAuth(up); resp.StatusCode != 200 || got != "" {
		t.Errorf("status %d, upstream Authorization %q; want 200 and none", resp.StatusCode, got)
	}
	// No SNI (a client dialling an IP sends none): spliced, never injected,
	// even with the path of a rule.
	ipOrig := netip.MustParseAddrPort(addrOf(up.Server))
	ipAddr := redirected(t, e, ipOrig)
	e.route(ipOrig.String(), addrOf(up.Server))
	resp, err = directClient(ipAddr, p.pool).Get("https://" + ipOrig.String() + "/v1/models")
	if err != nil {
		t.Fatalf("no SNI, spliced: %v", err)
	}
	resp.Body.Close()
	if got := lastAuth(up); got != "" {
		t.Errorf("no SNI: upstream saw Authorization %q, want none", got)
	}
	// Plain HTTP to a ruled host name: spliced, no credential.
	httpOrig := netip.MustParseAddrPort("192.0.2.10:80")
	e.route(httpOrig.String(), addrOf(plain.Server))
	resp, err = directClient(redirected(t, e, httpOrig), nil).Get("http://api.example.test/v1/models")
	if err != nil {
		t.Fatalf("plain HTTP, spliced: %v", err)
	}
	resp.Body.Close()
	if got := lastAuth(plain); got != "" {
		t.Errorf("plain HTTP to a ruled host: upstream saw Authorization %q, want none", got)
	}
}

func TestTransparentDenyAndLoop(t *testing.T) {
	e, p, up, _ := newEnv(t, "unmatched: deny\n", okHandler)
	orig := netip.MustParseAddrPort("192.0.2.10:443")
	e.route(orig.String(), addrOf(up.Server))
	addr := redirected(t, e, orig)
	for _, u := range []string{"https://other.example.test/", "https://" + orig.String() + "/"} {
		if resp, err := directClient(addr, p.pool).Get(u); err == nil {
			resp.Body.Close()
			t.Errorf("%s under unmatched: deny: status %d, want the connection closed", u, resp.StatusCode)
		}
	}
	// A ruled host still works under deny.
	resp, err := directClient(addr, e.ca).Get("https://api.example.test/v1/x")
	if err != nil {
		t.Fatalf("a ruled host under deny: %v", err)
	}
	resp.Body.Close()
	if e.hasDialled(orig.String()) {
		t.Errorf("credproxy dialled the original address %s under deny", orig)
	}
	// A connection whose original destination is the listener itself loops.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	self := netip.MustParseAddrPort(ln.Addr().String())
	go func() {
		if c, err := ln.Accept(); err == nil {
			e.px.ServeRedirectedConn(c, self)
		}
	}()
	c, err := net.DialTimeout("tcp", self.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection to the transparent listener itself: read %d, %v; want it closed", n, err)
	}
}

// TestTransparentServerFirstAndIdle: a protocol where the server speaks
// first sends nothing to peek at; after the header timeout it is spliced
// anyway, and a spliced connection that goes idle is closed.
func TestTransparentServerFirstAndIdle(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	banner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer banner.Close()
	go func() {
		for {
			c, err := banner.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "220 hello\n")
				_, _ = io.Copy(c, c) // echo
			}()
		}
	}()
	orig := netip.MustParseAddrPort("192.0.2.20:25")
	e := startProxyWith(t, p, baseConfig, map[string]string{orig.String(): banner.Addr().String()},
		func(o *proxy.Options) { o.IdleTimeout = 300 * time.Millisecond })
	c, err := net.DialTimeout("tcp", redirected(t, e, orig), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, len("220 hello\n"))
	if err != nil || string(buf[:n]) != "220 hello\n" {
		t.Fatalf("server-first protocol: read %q, %v; want the server's banner", buf[:n], err)
	}
	_, _ = io.WriteString(c, "ping\n")
	if n, err = io.ReadAtLeast(c, buf, 5); err != nil || string(buf[:n]) != "ping\n" {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}
	start := time.Now()
	if n, err = c.Read(buf); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an idle spliced connection: read %d, %v; want it closed", n, err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("closed after %v of idleness, want about the 300ms idle timeout", waited)
	}
	testutil.WaitFor(t, func() bool { return e.px.Connections() == 0 }, "the spliced connection to be released")
}
