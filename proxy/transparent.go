package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/credproxy/credproxy/rules"
)

// Transparent interception: iptables (`credproxy iptables`) redirects an
// agent's outbound connections to the transparent listener, whatever the
// agent's proxy settings. For each one credproxy reads where it was going
// (OriginalDst) and peeks at its TLS ClientHello:
//
//   - SNI names a host some rule could match (the SNI name with the
//     original port): the connection is intercepted exactly like a CONNECT
//     to that name. credproxy dials the name itself with its own resolver;
//     the original IP, which the agent chose, is never used for a ruled host.
//   - anything else (another name, no SNI, plain HTTP, not TLS at all) is
//     spliced byte for byte to the original address, or closed under
//     `unmatched: deny`. A credential is never injected on it: without SNI
//     there is no name to verify the upstream against.

// ServeTransparent serves connections redirected to ln by iptables until ln
// is closed.
func (p *Proxy) ServeTransparent(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("transparent accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go p.serveRedirected(c)
	}
}

func (p *Proxy) serveRedirected(c net.Conn) {
	orig, err := OriginalDst(c)
	if err != nil {
		p.log.Warn("transparent connection refused", "reason", "no original destination", "err", err)
		_ = c.Close()
		return
	}
	p.ServeRedirectedConn(c, orig)
}

// ServeRedirectedConn serves one redirected connection whose destination
// before the redirect was orig. It owns c.
func (p *Proxy) ServeRedirectedConn(c net.Conn, orig netip.AddrPort) {
	local, _ := addrPort(c.LocalAddr())
	// A connection to credproxy's own listener (the transparent one itself,
	// reached directly or through a redirect of credproxy's own traffic)
	// would loop.
	if p.self.has(orig, local.Addr()) || orig == local {
		p.refuseRedirected(c, orig, "its original destination is credproxy's own listener")
		return
	}
	if n := p.conns.Load(); n >= int64(p.limits.MaxConnections) {
		p.refuseRedirected(c, orig, "too many connections")
		return
	}
	sni, early := p.peekClientHello(c)
	cfg := p.cfg.Load() // one snapshot for this connection's decision
	if sni != "" {
		if dest, err := rules.ParseDest(sni, int(orig.Port())); err == nil && cfg.Intercepts(dest) {
			p.log.Debug("transparent intercepted", "dest", dest.String(), "original", orig.String())
			p.intercept(&prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(early), c)},
				route{dest: dest, identity: cfg.Identity})
			return
		}
	}
	if cfg.Unmatched == rules.UnmatchedDeny {
		p.refuseRedirected(c, orig, "no rule for it and unmatched is deny")
		return
	}
	p.splice(c, orig, early)
}

// refuseRedirected closes a redirected connection: there is no HTTP
// exchange yet to answer with a status.
func (p *Proxy) refuseRedirected(c net.Conn, orig netip.AddrPort, reason string) {
	p.obs.Request("", outcomeDenied, 0)
	p.log.Info("transparent connection refused", "original", orig.String(), "reason", reason)
	_ = c.Close()
}

// errHelloRead stops a handshake once crypto/tls has parsed the ClientHello.
var errHelloRead = errors.New("client hello read")

// peekClientHello reads the start of c: if it is a TLS ClientHello, sni is
// its server name, parsed by crypto/tls itself (a handshake stopped in
// GetConfigForClient, writing nothing to the agent). early holds every byte
// read, to replay. A connection that sends nothing within the header
// timeout (a server-speaks-first protocol) comes back with neither.
func (p *Proxy) peekClientHello(c net.Conn) (sni string, early []byte) {
	_ = c.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	first := make([]byte, 1)
	if n, _ := c.Read(first); n == 0 {
		return "", nil
	}
	if first[0] != tlsRecordHandshake {
		return "", first
	}
	var read bytes.Buffer
	read.Write(first)
	hc := &helloConn{Conn: c, r: io.MultiReader(bytes.NewReader(first), io.TeeReader(c, &read))}
	_ = tls.Server(hc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni = h.ServerName
		return nil, errHelloRead
	}}).Handshake()
	return sni, read.Bytes()
}

// helloConn feeds crypto/tls the agent's bytes and swallows what it writes
// back (the alert that ends the stopped handshake).
type helloConn struct {
	net.Conn
	r io.Reader
}

func (c *helloConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *helloConn) Write(b []byte) (int, error) { return len(b), nil }

// splice passes a redirected connection byte for byte to where it was
// going, replaying the bytes already read. Its upstream side closes both
// when no byte has moved either way for limits.idleTimeout.
func (p *Proxy) splice(c net.Conn, orig netip.AddrPort, early []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Load().Upstream.DialTimeout+time.Second)
	up, err := p.dialTunnel(ctx, "tcp", orig.String())
	cancel()
	if err != nil {
		p.obs.Request("", outcomeError, 0)
		p.log.Info("transparent splice failed", "original", orig.String(), "err", upstreamErrorText(err))
		_ = c.Close()
		return
	}
	p.obs.Request("", outcomeTunnelled, 0)
	p.log.Debug("transparent spliced", "original", orig.String())
	if _, err := up.Write(early); err != nil {
		_ = up.Close()
		_ = c.Close()
		return
	}
	done := make(chan error, 2)
	go func() { done <- copyHalf(up, c) }()
	go func() { done <- copyHalf(c, up) }()
	if err := <-done; err != nil {
		// One side failed or went idle: nothing more will flow.
		_ = c.Close()
		_ = up.Close()
	} else {
		// One side finished cleanly: give the other the idle timeout.
		_ = c.SetReadDeadline(time.Now().Add(p.limits.IdleTimeout))
	}
	<-done
	_ = c.Close()
	_ = up.Close()
}

// copyHalf copies src to dst, then half-closes dst so the far end sees EOF.
// A clean end (EOF) is a nil error.
func copyHalf(dst, src net.Conn) error {
	_, err := io.Copy(dst, src)
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	}
	return err
}
