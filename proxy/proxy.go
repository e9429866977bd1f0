// Package proxy is credproxy's forward proxy: goproxy wiring, CONNECT
// decisions (tunnel, MITM or deny), the local CA and its leaf cache, binding
// every request to the destination actually dialled, credential injection on
// the way out and masking on the way back, and JSON error responses. It does
// not parse YAML (rules does) or talk to a secret store (lease does).
package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	// Dial dials every upstream connection; nil uses a plain net.Dialer.
	Dial DialFunc
	// IdleTimeout closes hijacked connections (tunnels, MITM sessions) that
	// move no bytes for this long; 0 means 5 minutes.
	IdleTimeout time.Duration
}

// Proxy is an http.Handler to serve on the proxy listener.
type Proxy struct {
	cfg    *rules.Config
	creds  Credentials
	obs    Observer
	log    *slog.Logger
	dial   DialFunc
	idle   time.Duration
	tr     *http.Transport
	leaves *leafCache
	gp     *goproxy.ProxyHttpServer
	plain  http.Handler

	inflight atomic.Int64 // requests whose response body is still open
	draining atomic.Bool
}

// New builds a Proxy from a validated config.
func New(o Options) (*Proxy, error) {
	if o.Config == nil || o.CA == nil || o.Credentials == nil {
		return nil, errors.New("proxy: Config, CA and Credentials are required")
	}
	p := &Proxy{cfg: o.Config, creds: o.Credentials, obs: o.Observer, log: o.Logger, dial: o.Dial, idle: o.IdleTimeout}
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.dial == nil {
		p.dial = defaultDial()
	}
	if p.idle <= 0 {
		p.idle = 5 * time.Minute
	}
	roots, err := upstreamRoots(o.Config.Upstream.CAFiles)
	if err != nil {
		return nil, err
	}
	p.tr = newTransport(roots, p.dial, o.Config.Upstream.HTTP2)
	if p.leaves, err = newLeafCache(o.CA, o.Config.CertCacheSize, p.obs); err != nil {
		return nil, err
	}
	p.gp = p.newGoproxy()
	p.plain = p.newPlainHandler()
	return p, nil
}

// ServeHTTP dispatches CONNECT to goproxy and absolute-form plain HTTP to our
// own streaming handler (goproxy's plain path buffers chunked bodies).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		p.gp.ServeHTTP(idleHijacker{w, p.idle}, r)
	case r.URL.IsAbs():
		p.plain.ServeHTTP(w, r)
	default:
		writeError(w, http.StatusBadRequest, "", "credproxy is a forward proxy: point HTTPS_PROXY/HTTP_PROXY at it")
	}
}

// Drain marks the proxy as shutting down (responses then carry Connection:
// close, ending keep-alive tunnels) and waits until no request is in flight
// or ctx is done. http.Server.Shutdown does not see hijacked connections, so
// MITM'd requests are counted here.
func (p *Proxy) Drain(ctx context.Context) error {
	p.draining.Store(true)
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

// Close drops idle upstream connections.
func (p *Proxy) Close() { p.tr.CloseIdleConnections() }

// identity names the caller. Until agents authenticate to the proxy it is
// the sidecar's fixed identity from the config.
func (p *Proxy) identity(*http.Request) string { return p.cfg.Identity }

// idleHijacker hands goproxy connections that close when idle: after a
// Hijack, http.Server's deadlines no longer apply.
type idleHijacker struct {
	http.ResponseWriter
	idle time.Duration
}

func (h idleHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("proxy: %T cannot hijack", h.ResponseWriter)
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return newIdleConn(c, h.idle), rw, nil
}

type nopObserver struct{}

func (nopObserver) Request(string, string, int)            {}
func (nopObserver) UpstreamDuration(string, time.Duration) {}
func (nopObserver) TunnelOpened()                          {}
func (nopObserver) TunnelClosed()                          {}
func (nopObserver) CertCache(bool)                         {}
func (nopObserver) CertCacheSize(int)                      {}
