package proxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/elazarl/goproxy"

	"github.com/credproxy/credproxy/rules"
)

func (p *Proxy) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.Tr = p.tr
	// goproxy's default reads HTTPS_PROXY from our own environment: a sidecar
	// whose environment names itself would dial itself forever.
	gp.ConnectDial = nil
	gp.ConnectionErrHandler = p.connectError
	gp.OnRequest().HandleConnectFunc(p.handleConnect)
	return gp
}

var rejectConnect = &goproxy.ConnectAction{Action: goproxy.ConnectReject}

// handleConnect decides tunnel, MITM or deny. Only hosts some rule could
// match are intercepted; everything else is tunnelled untouched, with no CA
// involved, or refused under `unmatched: deny`.
func (p *Proxy) handleConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	dest, err := rules.ParseDest(host, 443)
	if err != nil {
		ctx.Resp = p.refuse(ctx.Req, nil, badRequest("bad CONNECT target: "+err.Error()))
		return rejectConnect, host
	}
	cfg := p.cfg.Load() // one snapshot for this CONNECT's decisions
	id, ref := p.identify(cfg, ctx.Req)
	if ref != nil {
		ctx.Resp = p.refuse(ctx.Req, &route{dest: dest}, ref)
		return rejectConnect, host
	}
	// Every request in the tunnel is this caller's: the identity is on the route.
	rt := &route{dest: dest, identity: id}
	if n := p.conns.Load(); n >= int64(p.limits.MaxConnections) {
		ctx.Resp = p.refuse(ctx.Req, rt, tooManyConnections(n))
		return rejectConnect, host
	}
	if cfg.Intercepts(dest) {
		return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: func(_ *http.Request, client net.Conn, _ *goproxy.ProxyCtx) {
			p.serveMITM(client, *rt)
		}}, dest.String()
	}
	if cfg.Unmatched == rules.UnmatchedDeny {
		ctx.Resp = p.refuse(ctx.Req, rt, unmatchedDenied(dest.String()))
		return rejectConnect, host
	}
	ctx.Dialer = p.dialTunnel
	p.obs.Request("", outcomeTunnelled, 0)
	p.log.Debug("connect tunnelled", "dest", dest.String())
	return &goproxy.ConnectAction{Action: goproxy.ConnectAccept}, dest.String()
}

// dialTunnel dials a pass-through tunnel's upstream, counted while open.
func (p *Proxy) dialTunnel(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.obs.TunnelOpened()
	p.conns.Add(1)
	return &countedConn{idleConn: newIdleConn(c, p.limits.IdleTimeout), onClose: p.obs.TunnelClosed, conns: &p.conns}, nil
}

type countedConn struct {
	*idleConn
	once    sync.Once
	onClose func()
	conns   *atomic.Int64
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.onClose(); c.conns.Add(-1) })
	return c.idleConn.Close()
}

// connectError answers a CONNECT whose upstream could not be dialled.
func (p *Proxy) connectError(w io.Writer, ctx *goproxy.ProxyCtx, err error) {
	dest, _ := rules.ParseDest(ctx.Req.URL.Host, 443)
	rt := &route{dest: dest}
	resp := p.refuse(ctx.Req, rt, p.upstreamRefusal(ctx.Req, rt, "", err))
	resp.Close = true
	_ = resp.Write(w)
}
