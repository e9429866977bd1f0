package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/credproxy/credproxy/rules"
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

func defaultDial(timeout time.Duration) DialFunc {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return d.DialContext
}

// newTransport builds the upstream transport: a tuned clone of Go's default,
// with no proxy from the environment (a sidecar whose own HTTPS_PROXY names
// itself would loop), verified TLS, HTTP/2 where offered (unless http2 is
// false), and a connection pool sized for an agent that hammers a few APIs.
func newTransport(roots *x509.CertPool, dial DialFunc, up rules.Upstream) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = dial
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.ForceAttemptHTTP2 = up.HTTP2
	if !up.HTTP2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // non-nil and empty: HTTP/1.1 only
	}
	window := up.StreamWindow
	if window <= 0 {
		window = 256 << 10
	}
	// HTTP/2 buffers up to the flow-control window per stream: with Go's
	// default of 4 MiB, 100 streams whose agents stopped reading held 400 MB.
	// The connection's window stays large: streams share it, and a small one
	// would let a few stalled streams starve every other on the connection.
	tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: window}
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	tr.IdleConnTimeout = 90 * time.Second
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ExpectContinueTimeout = time.Second
	tr.ResponseHeaderTimeout = up.ResponseHeaderTimeout
	return tr
}

// connectTo dials the address upstream.connectTo names for addr, if any.
// The transport still verifies the upstream's certificate against the name
// in the URL, so a remapped destination must prove it is that name.
func connectTo(dial DialFunc, to map[string]string) DialFunc {
	if len(to) == 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if d, err := rules.ParseDest(addr, 0); err == nil {
			if mapped, ok := to[d.String()]; ok {
				addr = mapped
			}
		}
		return dial(ctx, network, addr)
	}
}

// errSelfDial is a dial that reached one of credproxy's own listeners.
var errSelfDial = errors.New("refusing to connect to credproxy's own listener")

// selfSet is credproxy's own listen addresses.
type selfSet []netip.AddrPort

func newSelfSet(addrs []string) (selfSet, error) {
	var s selfSet
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("proxy: own address %q: %w", a, err)
		}
		pn, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("proxy: own address %q: %w", a, err)
		}
		ip := netip.IPv4Unspecified()
		if host != "" && host != "localhost" {
			if ip, err = netip.ParseAddr(host); err != nil {
				return nil, fmt.Errorf("proxy: own address %q must be an IP: %w", a, err)
			}
		} else if host == "localhost" {
			ip = netip.MustParseAddr("127.0.0.1")
		}
		s = append(s, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
	}
	return s, nil
}

// guard wraps dial so that a connection that lands on credproxy's own
// listener is closed before a byte is sent: whatever name the agent used
// (127.0.0.1, localhost, a DNS name resolving to us), the address reached is
// what is checked.
func (s selfSet) guard(dial DialFunc) DialFunc {
	if len(s) == 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if s.reaches(c) {
			_ = c.Close()
			return nil, &net.OpError{Op: "dial", Net: network, Err: errSelfDial}
		}
		return c, nil
	}
}

func (s selfSet) reaches(c net.Conn) bool {
	remote, ok := addrPort(c.RemoteAddr())
	if !ok {
		return false
	}
	local, _ := addrPort(c.LocalAddr())
	return s.has(remote, local.Addr())
}

// has reports whether dst is one of credproxy's own listeners, as seen from
// a socket whose own address is local.
func (s selfSet) has(dst netip.AddrPort, local netip.Addr) bool {
	for _, self := range s {
		if self.Port() != dst.Port() {
			continue
		}
		switch {
		case self.Addr() == dst.Addr():
			return true
		case self.Addr().IsUnspecified() && (dst.Addr().IsLoopback() || dst.Addr() == local):
			return true
		}
	}
	return false
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// isTimeout reports a dial, handshake or response-header timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
