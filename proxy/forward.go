package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
	"github.com/credproxy/credproxy/rules"
)

// Request outcomes, the `outcome` label of credproxy_requests_total.
const (
	outcomeInjected    = metrics.OutcomeInjected    // a rule matched and its credential went out
	outcomePassthrough = metrics.OutcomePassthrough // intercepted host, no rule for this path/method
	outcomeTunnelled   = metrics.OutcomeTunnelled   // CONNECT passed through untouched
	outcomeDenied      = metrics.OutcomeDenied      // refused by policy (403, 421, 400)
	outcomeError       = metrics.OutcomeError       // credential or upstream failure (502)
)

// PurposeHeader lets an agent say why it makes a request; it goes to the
// audit trail and is stripped before the request leaves.
const PurposeHeader = "X-Credproxy-Purpose"

// forward matches req against the rules for dest, injects the rule's
// credential and sends it upstream. It always returns a response: failures
// become JSON errors, never a dropped connection. The request counts as in
// flight until its response body is closed, so Drain can wait for it.
func (p *Proxy) forward(req *http.Request, dest rules.Dest, identity string) *http.Response {
	p.inflight.Add(1)
	resp := p.decideAndSend(req, dest, identity)
	if p.draining.Load() {
		resp.Close = true // end keep-alive tunnels once shutdown has begun
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		p.inflight.Add(-1) // an upgraded connection is not a request to drain
		return resp
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() { p.inflight.Add(-1) }}
	return resp
}

func (p *Proxy) decideAndSend(req *http.Request, dest rules.Dest, identity string) *http.Response {
	start := time.Now()
	purpose := req.Header.Get(PurposeHeader)
	req.Header.Del(PurposeHeader)

	rule, _ := p.cfg.Match(dest, req.Method, req.URL.EscapedPath(), identity)
	if rule == nil {
		if p.cfg.Unmatched == rules.UnmatchedDeny {
			return p.refuse(req, dest, "", http.StatusForbidden, outcomeDenied,
				fmt.Sprintf("no rule allows %s %s%s and unmatched is deny", req.Method, dest, req.URL.Path))
		}
		return p.send(req, dest, nil, nil, lease.Use{}, start)
	}
	if purpose == "" {
		purpose = rule.Purpose
	}
	use := lease.Use{Rule: rule.Name, Purpose: purpose}
	ticket, err := p.creds.Get(req.Context(), rule.Credential, identity, use)
	if err != nil {
		return p.refuse(req, dest, rule.Name, http.StatusBadGateway, outcomeError,
			"credential unavailable: "+err.Error())
	}
	if err := rule.Apply(req, rules.Values{Value: ticket.Value, Data: ticket.Data}); err != nil {
		return p.refuse(req, dest, rule.Name, http.StatusBadGateway, outcomeError,
			fmt.Sprintf("credential %q: inject: %v", rule.Credential, err))
	}
	// Let the transport negotiate gzip and decode it, so the masking below
	// sees plain bytes; an agent-chosen encoding could hide an echoed value.
	req.Header.Del("Accept-Encoding")
	return p.send(req, dest, rule, &ticket, use, start)
}

// send does the upstream round trip. With a ticket it also reports a 401 and
// masks the credential in whatever comes back.
func (p *Proxy) send(req *http.Request, dest rules.Dest, rule *rules.Rule, t *lease.Ticket, use lease.Use, start time.Time) *http.Response {
	name, outcome := "", outcomePassthrough
	if rule != nil {
		name, outcome = rule.Name, outcomeInjected
	}
	resp, err := p.tr.RoundTrip(upstreamRequest(req))
	if err != nil {
		status := http.StatusBadGateway
		if req.Context().Err() == context.Canceled {
			status = 499 // the agent went away; nobody reads this
		}
		return p.refuse(req, dest, name, status, outcomeError, "upstream "+dest.String()+": "+upstreamErrorText(err))
	}
	p.obs.UpstreamDuration(name, time.Since(start))
	p.obs.Request(name, outcome, resp.StatusCode)
	if t != nil {
		if resp.StatusCode == http.StatusUnauthorized {
			p.creds.Unauthorized(*t, use)
		}
		maskResponse(resp, req, t)
	}
	if p.log.Enabled(req.Context(), slog.LevelDebug) { // the arguments cost allocations on every request
		p.log.Debug("request", "rule", name, "dest", dest.String(), "method", req.Method,
			"path", req.URL.Path, "status", resp.StatusCode, "outcome", outcome,
			"lease_id", leaseID(t), "duration_ms", time.Since(start).Milliseconds())
	}
	return resp
}

// upstreamRequest drops the agent's "Connection: close": it is hop-by-hop,
// ending the agent's connection to us, not our pooled one upstream, which it
// would retire (over HTTP/2, for every request sharing it).
func upstreamRequest(req *http.Request) *http.Request {
	if !req.Close {
		return req
	}
	out := req.WithContext(req.Context()) // a shallow copy: goproxy still closes the agent's side
	out.Close = false
	return out
}

// maskResponse masks the credential's values, and the exact slot value sent,
// in the response headers and body.
func maskResponse(resp *http.Response, req *http.Request, t *lease.Ticket) {
	values := make([]string, 0, 2+len(t.Data))
	values = append(values, t.Value)
	for _, v := range t.Data {
		values = append(values, v)
	}
	if a := req.Header.Get("Authorization"); a != "" {
		values = append(values, a)
	}
	s := secret.NewScrubber(values...)
	if s.Empty() {
		return
	}
	s.Header(resp.Header)
	// A 101 body is the raw upgraded connection; it is not a response body.
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = s.Body(resp.Body)
	}
}

func (p *Proxy) refuse(req *http.Request, dest rules.Dest, rule string, status int, outcome, msg string) *http.Response {
	p.obs.Request(rule, outcome, status)
	p.log.Info("request refused", "rule", rule, "dest", dest.String(), "method", req.Method,
		"path", req.URL.Path, "status", status, "reason", msg)
	return errorResponse(req, status, rule, msg)
}

func leaseID(t *lease.Ticket) string {
	if t == nil {
		return ""
	}
	return t.LeaseID
}

// destKey carries a plain-HTTP request's destination from ServeHTTP to the
// transport inside httputil.ReverseProxy.
type destKey struct{}

// newPlainHandler serves absolute-form http:// requests with a streaming
// ReverseProxy (FlushInterval -1 flushes every write: SSE and NDJSON flow).
func (p *Proxy) newPlainHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(destKey{}).(*tunnel)
			pr.Out.URL.Host = t.dest.String()
			pr.Out.Host = pr.In.Host
		},
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			t := req.Context().Value(destKey{}).(*tunnel)
			return p.forward(req, t.dest, t.identity), nil
		}),
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadGateway, "", "proxy: "+upstreamErrorText(err))
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Scheme != "http" {
			writeError(w, http.StatusBadRequest, "", "absolute-form "+r.URL.Scheme+":// requests are not proxied; use CONNECT (HTTPS_PROXY)")
			return
		}
		dest, err := rules.ParseDest(r.URL.Host, 80)
		if err != nil {
			writeError(w, http.StatusBadRequest, "", "bad request target: "+err.Error())
			return
		}
		t := &tunnel{dest: dest, identity: p.identity(r)}
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), destKey{}, t)))
	})
}

// doneBody calls done once, when the body is closed.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
