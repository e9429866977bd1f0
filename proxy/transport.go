package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// upstreamRoots is the system pool plus the configured extra roots. There is
// deliberately no way to turn verification off: a credential must only ever be
// sent to the server that proves it is the matched host.
func upstreamRoots(caFiles []string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range caFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("upstream.caFiles: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("upstream.caFiles: %s holds no PEM certificate", f)
		}
	}
	return pool, nil
}

// DialFunc dials an upstream. Every path out of the proxy (MITM'd requests,
// plain HTTP and raw tunnels) goes through one, so egress policy lives in
// one place.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func defaultDial() DialFunc {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext
}

// newTransport builds the upstream transport: a tuned clone of Go's default,
// with no proxy from the environment (a sidecar whose own HTTPS_PROXY names
// itself would loop), verified TLS, HTTP/2 where offered (unless http2 is
// false), and a connection pool sized for an agent that hammers a few APIs.
func newTransport(roots *x509.CertPool, dial DialFunc, http2 bool) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = dial
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.ForceAttemptHTTP2 = http2
	if !http2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // non-nil and empty: HTTP/1.1 only
	}
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	tr.IdleConnTimeout = 90 * time.Second
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ExpectContinueTimeout = time.Second
	return tr
}

// idleConn closes a hijacked connection that moves no bytes, in either
// direction, for idle: after a Hijack, http.Server's timeouts no longer apply
// (goproxy issue #724), so an agent that opens tunnels and walks away would pin
// goroutines forever. A long download counts as activity for the read side.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte either way
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	ic := &idleConn{Conn: c, idle: idle}
	ic.last.Store(time.Now().UnixNano())
	return ic
}

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.last.Store(time.Now().UnixNano())
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && n == 0 &&
			time.Since(time.Unix(0, c.last.Load())) < c.idle {
			continue // the other direction is busy: not idle
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite and CloseRead keep goproxy's half-close tunnel path working.
func (c *idleConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *idleConn) CloseRead() error {
	if hc, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return hc.CloseRead()
	}
	return nil
}
