// Package proxy is credproxy's forward proxy: goproxy wiring, CONNECT
// decisions (tunnel, MITM or deny), the local CA and its leaf cache, binding
// every request to the destination actually dialled, credential injection on
// the way out and masking on the way back, and JSON error responses. It does
// not parse YAML (rules does) or talk to a secret store (lease does).
package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/rules"
)

// Credentials gives the proxy a credential for a rule; *lease.Manager is one.
type Credentials interface {
	// Get returns a live credential (acquiring a lease if none is held).
	Get(ctx context.Context, credential, identity string, u lease.Use) (lease.Ticket, error)
	// Unauthorized reports that the upstream answered 401 to a request that
	// carried t, so the lease behind it is bad.
	Unauthorized(t lease.Ticket, u lease.Use)
}

// Observer receives per-request measurements; *metrics.Metrics is one.
// Labels are rule names and fixed enums, never hosts or values.
type Observer interface {
	Request(rule, outcome string, status int)
	UpstreamDuration(rule string, d time.Duration)
	TunnelOpened()
	TunnelClosed()
	CertCache(hit bool)
	CertCacheSize(n int)
}

// Options configures New.
type Options struct {
	Config      *rules.Config // loaded and validated
	CA          *CA
	Credentials Credentials
	Observer    Observer     // nil records nothing
	Logger      *slog.Logger // nil discards
	// Dial dials every upstream connection; nil uses a plain net.Dialer
	// with the config's upstream.dialTimeout.
	Dial DialFunc
	// IdleTimeout, when set, overrides limits.idleTimeout (for tests).
	IdleTimeout time.Duration
	// Self lists credproxy's own listen addresses (proxy, admin,
	// transparent): it never forwards to them, or an agent could drive the
	// admin API through it, or a redirected connection loop into credproxy.
	Self []string
}

// Proxy is an http.Handler to serve on the proxy listener.
type Proxy struct {
	// cfg is the rules in force. Every request reads it once, when it
	// starts, and decides, matches and injects on that one snapshot: a
	// reload (SetConfig) never changes a request half way through.
	cfg       atomic.Pointer[rules.Config]
	limits    rules.Limits
	creds     Credentials
	obs       Observer
	log       *slog.Logger
	dial      DialFunc // every upstream connection, guarded against credproxy's own addresses
	self      selfSet  // credproxy's own listeners
	tr        *http.Transport
	leaves    *leafCache
	gp        *goproxy.ProxyHttpServer
	pipeline  http.Handler  // decide → send → respond, for every request
	mitm      *http.Server  // serves intercepted connections
	mitmQueue *connQueue    // feeds mitm
	echo      *echoes       // values injected per destination, to mask
	slots     chan struct{} // limits.maxInflight upstream requests

	conns    atomic.Int64 // agent connections held: tunnels and intercepted
	inflight atomic.Int64 // requests whose response body is still open
	draining atomic.Bool
}

// New builds a Proxy from a validated config.
func New(o Options) (*Proxy, error) {
	if o.Config == nil || o.CA == nil || o.Credentials == nil {
		return nil, errors.New("proxy: Config, CA and Credentials are required")
	}
	p := &Proxy{limits: o.Config.Limits, creds: o.Credentials, obs: o.Observer, log: o.Logger, echo: newEchoes()}
	p.cfg.Store(o.Config)
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if o.IdleTimeout > 0 {
		p.limits.IdleTimeout = o.IdleTimeout
	}
	p.limits = withDefaults(p.limits)
	p.slots = make(chan struct{}, p.limits.MaxInflight)
	dial := o.Dial
	if dial == nil {
		dial = defaultDial(o.Config.Upstream.DialTimeout)
	}
	self, err := newSelfSet(o.Self)
	if err != nil {
		return nil, err
	}
	roots, err := upstreamRoots(o.Config.Upstream.CAFiles)
	if err != nil {
		return nil, err
	}
	p.self = self
	p.dial = self.guard(connectTo(dial, o.Config.Upstream.ConnectTo))
	p.tr = newTransport(roots, p.dial, o.Config.Upstream)
	if p.leaves, err = newLeafCache(o.CA, o.Config.CertCacheSize, p.obs); err != nil {
		return nil, err
	}
	p.gp = p.newGoproxy()
	p.pipeline = p.newPipeline()
	p.mitm = p.newMITMServer()
	p.mitmQueue = newConnQueue()
	go p.serveQueue()
	return p, nil
}

// withDefaults fills limits a hand-built Config (tests) left zero.
func withDefaults(l rules.Limits) rules.Limits {
	def := rules.DefaultLimits
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = def.MaxHeaderBytes
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = def.HeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = def.IdleTimeout
	}
	// Waiting for a request's first bytes is also being idle.
	l.HeaderTimeout = min(l.HeaderTimeout, l.IdleTimeout)
	if l.MaxConnections <= 0 {
		l.MaxConnections = def.MaxConnections
	}
	if l.MaxInflight <= 0 {
		l.MaxInflight = def.MaxInflight
	}
	if l.MaxPurposeBytes <= 0 {
		l.MaxPurposeBytes = def.MaxPurposeBytes
	}
	return l
}

// Server returns the http.Server to run on the proxy listener, with the
// limits that bound an agent's headers and idle connections.
func (p *Proxy) Server(errLog *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.limits.HeaderTimeout,
		IdleTimeout:       p.limits.IdleTimeout,
		MaxHeaderBytes:    p.limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelDebug),
	}
}

// ServeHTTP dispatches CONNECT to goproxy and absolute-form plain HTTP to the
// pipeline; the destination is the absolute URL's host, which net/http also
// puts in r.Host, whatever Host header the agent sent.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		p.gp.ServeHTTP(hijacker{w}, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		dest, err := rules.ParseDest(r.URL.Host, 80)
		if err != nil {
			writeResponse(w, p.refuse(r, nil, badRequest("bad request target: "+err.Error())))
			return
		}
		id, ref := p.identify(p.cfg.Load(), r)
		if ref != nil {
			writeResponse(w, p.refuse(r, &route{dest: dest, scheme: "http"}, ref))
			return
		}
		rt := &route{dest: dest, scheme: "http", identity: id}
		p.pipeline.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
	case r.URL.IsAbs():
		writeResponse(w, p.refuse(r, nil, schemeNotProxied(r.URL.Scheme)))
	default:
		writeResponse(w, p.refuse(r, nil, notAProxyRequest()))
	}
}

// serveIntercepted handles one request read from an intercepted tunnel.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	rt := routeOf(r)
	if rt == nil { // not from serveMITM: cannot happen
		writeResponse(w, p.refuse(r, nil, internalError("intercepted request without a route")))
		return
	}
	// A Host (or absolute URL) that differs from the CONNECT authority is
	// domain fronting: refuse it, or a credential for one host would be sent
	// to another.
	if inner, err := rules.ParseDest(r.Host, rt.dest.Port); err != nil || inner != rt.dest {
		writeResponse(w, p.refuse(r, rt, misdirected(rt.dest)))
		return
	}
	if p.draining.Load() && r.ProtoMajor == 1 {
		// End keep-alive tunnels once shutdown has begun. HTTP/2 has no
		// Connection header: Shutdown's GOAWAY ends those connections.
		w.Header().Set("Connection", "close")
	}
	p.pipeline.ServeHTTP(w, r)
}

// Drain marks the proxy as shutting down (HTTP/1.x responses then carry
// Connection: close, ending keep-alive tunnels; HTTP/2 connections get a
// GOAWAY from Shutdown), closes idle intercepted connections and
// waits until no request is in flight or ctx is done. http.Server.Shutdown
// of the proxy listener does not see hijacked connections.
func (p *Proxy) Drain(ctx context.Context) error {
	p.draining.Store(true)
	if err := p.mitm.Shutdown(ctx); err != nil {
		return fmt.Errorf("proxy: intercepted connections still open: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for p.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy: %d requests still in flight: %w", p.inflight.Load(), ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Config is the rules snapshot in force.
func (p *Proxy) Config() *rules.Config { return p.cfg.Load() }

// SetConfig makes cfg, loaded and validated, the rules for every request that
// starts from now on; requests already started finish on the snapshot they
// began with. A tunnel keeps the identity and the intercept-or-tunnel
// decision of its CONNECT; each request inside it is matched on the
// snapshot current when it starts. What New built from the config (the CA,
// limits, upstream transport, leaf cache) is not rebuilt: those need a
// restart.
func (p *Proxy) SetConfig(cfg *rules.Config) {
	if cfg == nil {
		panic("proxy: SetConfig(nil)")
	}
	p.cfg.Store(cfg)
}

// Inflight is the number of upstream requests whose response is still open.
func (p *Proxy) Inflight() int64 { return p.inflight.Load() }

// Connections is the number of agent connections held: tunnels and
// intercepted connections.
func (p *Proxy) Connections() int64 { return p.conns.Load() }

// Limits are the limits in force, after defaults.
func (p *Proxy) Limits() rules.Limits { return p.limits }

// Close stops the intercepting server and drops idle upstream connections.
func (p *Proxy) Close() {
	_ = p.mitm.Close()
	p.tr.CloseIdleConnections()
}

// hijacker hands goproxy connections that still hold any bytes the server
// read past the CONNECT request, such as an early ClientHello. Idle tunnels
// are closed by the upstream side's idleConn (dialTunnel); intercepted
// connections by the intercepting server's timeouts.
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("proxy: %T cannot hijack", h.ResponseWriter)
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	if n := rw.Reader.Buffered(); n > 0 {
		early, _ := rw.Reader.Peek(n)
		c = &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), c)}
	}
	return c, bufio.NewReadWriter(bufio.NewReader(c), rw.Writer), nil
}

// prefixConn replays bytes read ahead before reading the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

type nopObserver struct{}

func (nopObserver) Request(string, string, int)            {}
func (nopObserver) UpstreamDuration(string, time.Duration) {}
func (nopObserver) TunnelOpened()                          {}
func (nopObserver) TunnelClosed()                          {}
func (nopObserver) CertCache(bool)                         {}
func (nopObserver) CertCacheSize(int)                      {}
