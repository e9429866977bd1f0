package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"

	"github.com/elazarl/goproxy"

	"github.com/credproxy/credproxy/rules"
)

// tunnel is what a CONNECT decided, stored in goproxy's UserData. goproxy
// shares that pointer with every request in the tunnel, including concurrent
// ones, so it is never mutated after CONNECT.
type tunnel struct {
	dest     rules.Dest // the CONNECT authority: the only destination trusted
	identity string
}

func (p *Proxy) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.Tr = p.tr
	// goproxy's default reads HTTPS_PROXY from our own environment: a sidecar
	// whose environment names itself would dial itself forever.
	gp.ConnectDial = nil
	gp.KeepAcceptEncoding = true // forward decides about Accept-Encoding
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
		ctx.Resp = errorResponse(ctx.Req, http.StatusBadRequest, "", "bad CONNECT target: "+err.Error())
		p.obs.Request("", outcomeDenied, http.StatusBadRequest)
		return rejectConnect, host
	}
	if p.cfg.Intercepts(dest) {
		ctx.UserData = &tunnel{dest: dest, identity: p.identity(ctx.Req)}
		ctx.RoundTripper = goproxy.RoundTripperFunc(p.roundTripMITM)
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: p.tlsConfig}, dest.String()
	}
	if p.cfg.Unmatched == rules.UnmatchedDeny {
		ctx.Resp = errorResponse(ctx.Req, http.StatusForbidden, "", "no rule allows "+dest.String()+" and unmatched is deny")
		p.obs.Request("", outcomeDenied, http.StatusForbidden)
		p.log.Info("connect denied", "dest", dest.String())
		return rejectConnect, host
	}
	ctx.Dialer = p.dialTunnel
	p.obs.Request("", outcomeTunnelled, 0)
	p.log.Debug("connect tunnelled", "dest", dest.String())
	return &goproxy.ConnectAction{Action: goproxy.ConnectAccept}, dest.String()
}

// tlsConfig serves the agent a leaf for the CONNECT host, whatever SNI it
// sends: a client that asks for another name fails its own verification.
func (p *Proxy) tlsConfig(_ string, ctx *goproxy.ProxyCtx) (*tls.Config, error) {
	t := ctx.UserData.(*tunnel)
	cert, err := p.leaves.get(t.dest.Host)
	if err != nil {
		p.log.Error("mint leaf certificate", "host", t.dest.Host, "err", err)
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}, nil
}

// roundTripMITM forwards one request from inside an intercepted tunnel.
func (p *Proxy) roundTripMITM(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Response, error) {
	t := ctx.UserData.(*tunnel)
	// goproxy rebuilt req.URL from the inner Host header. A Host that differs
	// from the CONNECT authority is domain fronting: refuse it, or a
	// credential for one host would be sent to another.
	if inner, err := rules.ParseDest(req.Host, t.dest.Port); err != nil || inner != t.dest {
		p.obs.Request("", outcomeDenied, http.StatusMisdirectedRequest)
		p.log.Info("misdirected request", "dest", t.dest.String(), "host_ok", false)
		return errorResponse(req, http.StatusMisdirectedRequest, "",
			"Host header does not match the CONNECT target "+t.dest.String()), nil
	}
	req.URL.Host = t.dest.String() // dial what was matched, never what the request names
	return p.forward(req, t.dest, t.identity), nil
}

// dialTunnel dials a pass-through tunnel's upstream, counted while open.
func (p *Proxy) dialTunnel(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.obs.TunnelOpened()
	return &countedConn{idleConn: newIdleConn(c, p.idle), onClose: p.obs.TunnelClosed}, nil
}

type countedConn struct {
	*idleConn
	once    sync.Once
	onClose func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.onClose)
	return c.idleConn.Close()
}

// connectError answers a CONNECT whose upstream could not be dialled.
func (p *Proxy) connectError(w io.Writer, ctx *goproxy.ProxyCtx, err error) {
	msg := "upstream unreachable: " + upstreamErrorText(err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		msg = "upstream timed out: " + upstreamErrorText(err)
	}
	p.obs.Request("", outcomeError, http.StatusBadGateway)
	resp := errorResponse(ctx.Req, http.StatusBadGateway, "", msg)
	resp.Close = true
	_ = resp.Write(w)
}
