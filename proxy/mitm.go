package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Intercepted connections are served by credproxy's own http.Server, not by
// goproxy's MITM loop: net/http bounds header bytes (431) and the time to
// send them, cancels a request's context when its agent hangs up, refuses
// smuggling (CL+TE, obs-fold, bare LF), and never adds a User-Agent through
// httputil.ReverseProxy. goproxy still owns CONNECT.
//
// The server speaks HTTP/2 and HTTP/1.1 to agents (ALPN): HTTP/2-only
// clients (gRPC, some SDKs) work, and each stream is one request through the
// same pipeline as an HTTP/1.1 request. WebSocket stays on HTTP/1.1, which
// is what a client that means to upgrade asks for.

// mitmConn is an agent's connection inside a CONNECT tunnel to a host some
// rule names, before any TLS: what the CONNECT decided travels with it.
type mitmConn struct {
	net.Conn
	r       *bufio.Reader // holds the peeked first byte
	route   route
	idle    time.Duration
	renewed atomic.Int64 // unix nanoseconds when the write deadline was last set
}

func (c *mitmConn) Read(p []byte) (int, error) {
	if c.r.Buffered() == 0 {
		return c.Conn.Read(p) // the peeked byte is gone: skip a copy
	}
	return c.r.Read(p)
}

// Write gives up on an agent that stops reading: a stream it abandoned must
// not pin an upstream stream, its buffers and two goroutines for ever. The
// deadline moves at most every idle/8, not on every write.
func (c *mitmConn) Write(p []byte) (int, error) {
	now := time.Now()
	if last := c.renewed.Load(); now.UnixNano()-last > int64(c.idle/8) {
		c.renewed.Store(now.UnixNano())
		_ = c.Conn.SetWriteDeadline(now.Add(c.idle))
	}
	return c.Conn.Write(p)
}

// tlsRecordHandshake is the first byte of every TLS ClientHello.
const tlsRecordHandshake = 0x16

// serveMITM takes an intercepted tunnel from goproxy: it confirms the
// CONNECT and hands the connection to intercept.
func (p *Proxy) serveMITM(client net.Conn, rt route) {
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = client.Close()
		return
	}
	p.intercept(client, rt)
}

// intercept looks at an agent connection's first byte to tell TLS from
// cleartext and hands the connection to the intercepting server, bound to
// rt. Cleartext is served as plain HTTP, so a rule's credential is refused
// on it like any other request that would leave unencrypted. CONNECT
// tunnels and redirected connections (transparent.go) both come here.
func (p *Proxy) intercept(client net.Conn, rt route) {
	c := &mitmConn{Conn: client, r: bufio.NewReader(client), route: rt, idle: p.limits.IdleTimeout}
	_ = client.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	first, err := c.r.Peek(1)
	_ = client.SetReadDeadline(time.Time{})
	if err != nil {
		_ = client.Close()
		return
	}
	var conn net.Conn = c
	if first[0] == tlsRecordHandshake {
		c.route.scheme = "https"
		conn = tls.Server(c, p.tlsConfigFor(rt.dest.Host))
	} else {
		c.route.scheme = "http"
	}
	p.mitmQueue.push(conn)
}

// tlsConfigFor serves the agent a leaf for the CONNECT host, whatever SNI it
// sends: a client that asks for another name fails its own verification.
// ALPN offers HTTP/2 first, then HTTP/1.1; either way each request (or
// stream) goes through the same pipeline.
func (p *Proxy) tlsConfigFor(host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := p.leaves.get(host)
			if err != nil {
				p.log.Error("mint leaf certificate", "host", host, "err", err)
			}
			return cert, err
		},
	}
}

// routeOfConn recovers the route of an intercepted connection.
func routeOfConn(c net.Conn) (route, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	mc, ok := c.(*mitmConn)
	if !ok {
		return route{}, false
	}
	return mc.route, true
}

// h2MaxConcurrentStreams bounds the streams one HTTP/2 agent connection may
// have open at once; limits.maxInflight still bounds them all upstream.
const h2MaxConcurrentStreams = 250

// newMITMServer is the server for every intercepted connection. It speaks
// HTTP/1.1 and, on TLS connections that negotiated "h2", HTTP/2: Serve on a
// listener that hands out *tls.Conn runs TLSNextProto["h2"], which Protocols
// has net/http set up (the server has no TLSConfig of its own; tlsConfigFor
// offers the ALPN). Cleartext inside a tunnel is HTTP/1.x only. Under
// HTTP/2, MaxHeaderBytes is the SETTINGS_MAX_HEADER_LIST_SIZE (431 beyond),
// IdleTimeout closes a connection with no stream open, and a connection that
// sends nothing for limits.idleTimeout is pinged and closed if it does not
// answer.
func (p *Proxy) newMITMServer() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	return &http.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: p.limits.HeaderTimeout,
		IdleTimeout:       p.limits.IdleTimeout,
		MaxHeaderBytes:    p.limits.MaxHeaderBytes,
		Protocols:         &protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: h2MaxConcurrentStreams,
			SendPingTimeout:      p.limits.IdleTimeout,
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if rt, ok := routeOfConn(c); ok {
				return context.WithValue(ctx, routeKey{}, &rt)
			}
			return ctx
		},
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				p.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				p.conns.Add(-1)
			}
		},
	}
}

// connQueue is a net.Listener fed by serveMITM instead of accept(2).
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		_ = c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return queueAddr{} }

type queueAddr struct{}

func (queueAddr) Network() string { return "mitm" }
func (queueAddr) String() string  { return "intercepted" }

// serveQueue runs the intercepting server until the queue is closed.
func (p *Proxy) serveQueue() {
	if err := p.mitm.Serve(p.mitmQueue); err != nil && !errors.Is(err, http.ErrServerClosed) {
		p.log.Error("intercepting server stopped", "err", err)
	}
}
