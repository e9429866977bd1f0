package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

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

// TaskHeader names the task (begun through the control API) a request runs
// in, for `scope: task` credentials. Like PurposeHeader it is stripped before
// the request leaves, whatever rule (or none) it meets.
const TaskHeader = "X-Credproxy-Task"

// maxTaskIDBytes bounds the task id read from TaskHeader: ids are short,
// and the text goes into refusals and logs.
const maxTaskIDBytes = 64

// route is where one request goes: the destination credproxy dials (the
// CONNECT authority or the absolute URL's host, never a Host header), the
// scheme it leaves with, and who asked. It is fixed before any request in a
// tunnel is read and shared by all of them, so it is never mutated.
type route struct {
	dest     rules.Dest
	scheme   string // "https": TLS that credproxy verifies; "http": cleartext
	identity string
}

type routeKey struct{}

func routeOf(r *http.Request) *route {
	rt, _ := r.Context().Value(routeKey{}).(*route)
	return rt
}

// decision is what the rules say about one request: pass it on untouched
// (rule nil), or inject rule's credential, held in ticket.
type decision struct {
	rule   *rules.Rule
	ticket lease.Ticket
	use    lease.Use
}

// copyBuffers are the buffers ReverseProxy copies response bodies through.
// Without a pool it allocates 32 KiB per response: three quarters of every
// byte credproxy allocated under keep-alive load (an allocation profile of
// bench/load), and most of its GC work.
var copyBuffers = &bufferPool{}

// bufferPool is an httputil.BufferPool over sync.Pool. A buffer is zeroed
// before it goes back: it may have held a response that echoed a credential
// (masked only on its way to the agent).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != 32<<10 {
		return
	}
	buf = buf[:cap(buf)]
	clear(buf)
	b.p.Put(&buf)
}

// newPipeline is the one path every request takes, plain HTTP and
// intercepted alike: decide → send → respond. httputil.ReverseProxy does the
// HTTP plumbing (hop-by-hop headers, trailers, upgrades, flushing streams
// event by event, no User-Agent of its own, redirects never followed);
// exchange does the deciding.
func (p *Proxy) newPipeline() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rt := routeOf(pr.In)
			// Dial what was matched, in its normalised spelling; the path and
			// query are left exactly as the agent sent them, which is what
			// the rules matched.
			pr.Out.URL.Scheme = rt.scheme
			pr.Out.URL.Host = authority(rt.dest, rt.scheme)
			pr.Out.Host = ""
			if pr.In.ProtoMajor == 2 && pr.Out.Body != nil {
				// See doneBody.agentBody.
				pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), agentBodyKey{}, pr.In.Body))
			}
		},
		Transport:  roundTripFunc(p.exchange),
		BufferPool: copyBuffers,
		// 0: ReverseProxy flushes every write of a stream (text/event-stream,
		// or no Content-Length: NDJSON, chunked) and buffers a response of
		// known length into as few TLS records and syscalls as it can.
		FlushInterval: 0,
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Only reached when copying a response already begun failed, or
			// on an upgrade the upstream broke: nothing is left to count.
			p.log.Debug("response copy failed", "dest", routeOf(r).dest.String(), "err", upstreamErrorText(err))
			if r.Context().Err() == nil {
				w.WriteHeader(http.StatusBadGateway)
			}
		},
	}
}

// authority is dest as a URL host: the port is left out when it is the
// scheme's default, as a client would send it.
func authority(d rules.Dest, scheme string) string {
	if (scheme == "https" && d.Port == 443) || (scheme == "http" && d.Port == 80) {
		if strings.Contains(d.Host, ":") {
			return "[" + d.Host + "]"
		}
		return d.Host
	}
	return d.String()
}

// exchange is the pipeline's RoundTripper: it always returns a response,
// turning every failure into a JSON refusal.
func (p *Proxy) exchange(req *http.Request) (*http.Response, error) {
	rt := routeOf(req)
	start := time.Now()
	cfg := p.cfg.Load() // the request's one snapshot of the rules
	d, ref := p.decide(cfg, req, rt)
	if ref != nil {
		return p.refuse(req, rt, ref), nil
	}
	return p.send(cfg, req, rt, d, start), nil
}

// decide applies the rules to req. On an injection the credential is already
// in req when it returns.
func (p *Proxy) decide(cfg *rules.Config, req *http.Request, rt *route) (decision, *refusal) {
	purpose := cleanPurpose(req.Header.Get(PurposeHeader), p.limits.MaxPurposeBytes)
	req.Header.Del(PurposeHeader)
	taskID := cleanPurpose(req.Header.Get(TaskHeader), maxTaskIDBytes)
	req.Header.Del(TaskHeader)
	rule, ref := decideRule(cfg, rt, req.Method, req.URL.EscapedPath())
	if ref != nil || rule == nil {
		return decision{}, ref
	}
	if purpose == "" {
		purpose = rule.Purpose
	}
	d := decision{rule: rule, use: lease.Use{Rule: rule.Name, Purpose: purpose, Task: taskID}}
	var err error
	if d.ticket, err = p.creds.Get(req.Context(), rule.Credential, rt.identity, d.use); err != nil {
		if ref := taskRefusal(rule, err); ref != nil {
			return decision{}, ref
		}
		p.log.Warn("credential unavailable", "rule", rule.Name, "credential", rule.Credential, "err", p.echo.scrub(rt.dest, err.Error()))
		return decision{}, credentialUnavailable(rule.Name, rule.Credential, lease.PublicMessage(err))
	}
	if err := rule.Apply(req, valuesOf(d.ticket)); err != nil {
		return decision{}, injectionFailed(rule.Name, rule.Credential)
	}
	p.echo.remember(rt.dest, injectedValues(req, rule, d.ticket)...)
	return d, nil
}

// decideRule is what the rules alone say about a request at rt: the rule
// whose credential it gets, nil to pass it on untouched, or a refusal. It
// reads no credential, so Explain shares it with decide.
func decideRule(cfg *rules.Config, rt *route, method, rawPath string) (*rules.Rule, *refusal) {
	if method == http.MethodConnect || method == http.MethodTrace {
		// A CONNECT inside a tunnel would open a second tunnel from
		// credproxy's address; TRACE echoes the request, credential included.
		return nil, methodRefused(method)
	}
	rule, err := cfg.Match(rt.dest, method, rawPath, rt.identity)
	if errors.Is(err, rules.ErrAmbiguousPath) {
		// An upstream may decode %2F or resolve .. after we matched: what it
		// routes on must be what we matched.
		return nil, ambiguousPath(rt.dest)
	}
	if errors.Is(err, rules.ErrIdentity) {
		// Never pass it on uncredentialed as if no rule named it: the caller
		// would take the upstream's 401 for a bad key, not a missing grant.
		return nil, identityDenied(rule.Name, rt.identity)
	}
	if rule == nil {
		if cfg.Unmatched == rules.UnmatchedDeny {
			return nil, unmatchedDenied(method + " " + rt.dest.String() + rawPath)
		}
		return nil, nil
	}
	if rt.scheme != "https" && !rule.AllowPlaintext {
		return nil, cleartextRefused(rule.Name)
	}
	return rule, nil
}

// send does the upstream round trip and masks what comes back.
func (p *Proxy) send(cfg *rules.Config, req *http.Request, rt *route, d decision, start time.Time) *http.Response {
	name, outcome := "", outcomePassthrough
	if d.rule != nil {
		name, outcome = d.rule.Name, outcomeInjected
	}
	if !p.acquireSlot() {
		return p.refuse(req, rt, tooManyRequests(name, p.limits.MaxInflight))
	}
	s := p.echo.scrubber(rt.dest)
	if !s.Empty() {
		// The transport then negotiates gzip and decodes it, so masking sees
		// plain bytes: an agent-chosen encoding could hide an echoed value.
		req.Header.Del("Accept-Encoding")
		req = withMaskedInformational(req, s)
	}
	if ref := p.sign(req, rt, d); ref != nil { // last: nothing may change req after it
		p.releaseSlot()
		return p.refuse(req, rt, ref)
	}
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		p.releaseSlot()
		return p.refuse(req, rt, p.upstreamRefusal(req, rt, name, err))
	}
	p.obs.UpstreamDuration(name, time.Since(start))
	if d.rule != nil && resp.StatusCode == http.StatusUnauthorized {
		p.creds.Unauthorized(d.ticket, d.use)
	}
	if ref := maskResponse(resp, s); ref != nil {
		resp.Body.Close()
		p.releaseSlot()
		ref.rule = name
		return p.refuse(req, rt, ref)
	}
	p.obs.Request(name, outcome, resp.StatusCode)
	switch {
	case d.rule == nil && cfg.Intercepts(rt.dest):
		// Often a rule too narrow for what the agent does (git's POST to
		// git-upload-pack under a GET-only rule): say so where it is seen.
		p.log.Info("request to a ruled host sent without a credential", "dest", rt.dest.String(),
			"method", req.Method, "path", req.URL.EscapedPath(), "status", resp.StatusCode)
	case p.log.Enabled(req.Context(), slog.LevelDebug): // the arguments cost allocations on every request
		p.log.Debug("request", "rule", name, "dest", rt.dest.String(), "identity", rt.identity, "method", req.Method,
			"path", req.URL.EscapedPath(), "status", resp.StatusCode, "outcome", outcome,
			"lease_id", d.ticket.LeaseID, "duration_ms", time.Since(start).Milliseconds())
	}
	return p.track(req, resp)
}

// upstreamRefusal maps a transport error to a refusal.
func (p *Proxy) upstreamRefusal(req *http.Request, rt *route, rule string, err error) *refusal {
	switch {
	case errors.Is(err, errSelfDial):
		return ownAddress(rule, rt.dest)
	case req.Context().Err() != nil:
		return clientClosed(rule) // nobody reads this
	}
	text := p.echo.scrub(rt.dest, upstreamErrorText(err))
	var oe *net.OpError
	switch {
	case isTimeout(err):
		return upstreamTimeout(rule, rt.dest, text)
	case errors.As(err, &oe) && oe.Op == "dial", strings.Contains(err.Error(), "dial"):
		return upstreamUnreachable(rule, rt.dest, text)
	}
	return upstreamError(rule, rt.dest, text)
}

// refuse turns a refusal into its response, counting and logging it: the one
// place that does, so no path forgets.
func (p *Proxy) refuse(req *http.Request, rt *route, r *refusal) *http.Response {
	p.obs.Request(r.rule, r.outcome, r.status)
	dest, identity := "", ""
	if rt != nil {
		dest, identity = rt.dest.String(), rt.identity
	}
	p.log.Info("request refused", "rule", r.rule, "dest", dest, "identity", identity, "method", req.Method,
		"path", req.URL.EscapedPath(), "status", r.status, "outcome", r.outcome, "problem", r.kind.slug, "reason", r.reason)
	return errorResponse(req, r)
}

// valuesOf is what a rule's template renders from a ticket.
func valuesOf(t lease.Ticket) rules.Values { return rules.Values{Value: t.Value, Data: t.Data} }

// injectedValues lists what credproxy just put into req for rule: the
// credential's value and fields, the rendered slot, and a Basic slot's
// user:pass, each of which an upstream might echo back in some encoding.
func injectedValues(req *http.Request, rule *rules.Rule, t lease.Ticket) []string {
	vals := make([]string, 0, 3+len(t.Data))
	vals = append(vals, t.Value)
	for _, v := range t.Data {
		vals = append(vals, v)
	}
	vals = append(vals, rule.SigningValues(valuesOf(t))...)
	slot := ""
	if rule.Inject.Header != "" {
		slot = req.Header.Get(rule.Inject.Header)
	} else if rule.Inject.Query != "" {
		slot = req.URL.Query().Get(rule.Inject.Query)
	}
	if slot != "" {
		vals = append(vals, slot)
		if b, ok := strings.CutPrefix(slot, "Basic "); ok {
			if up, err := base64.StdEncoding.DecodeString(b); err == nil {
				vals = append(vals, string(up))
			}
		}
	}
	return vals
}

// cleanPurpose bounds an agent's purpose text and drops control characters:
// it goes into one audit line, which must stay one line and small.
func cleanPurpose(s string, maxLen int) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			continue
		}
		if b.Len()+len(string(r)) > maxLen {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// track counts req as in flight until its response body is closed, so Drain
// can wait for it and the maxInflight slot is returned.
func (p *Proxy) track(req *http.Request, resp *http.Response) *http.Response {
	p.inflight.Add(1)
	done := func() { p.inflight.Add(-1); p.releaseSlot() }
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		done() // an upgraded connection is not a request to drain
		return resp
	}
	agent, _ := req.Context().Value(agentBodyKey{}).(io.Closer)
	resp.Body = &doneBody{ReadCloser: resp.Body, done: done, agentBody: agent}
	return resp
}

type agentBodyKey struct{}

func (p *Proxy) acquireSlot() bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (p *Proxy) releaseSlot() { <-p.slots }

// doneBody calls done once, when the body is closed.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
	// agentBody is an HTTP/2 agent's request body, closed first. The
	// HTTP/2 transport's Close waits until it has stopped sending the
	// request body, and ReverseProxy hands it a body whose Close does
	// nothing: a gRPC server that ends a call while the agent's stream is
	// still open (an error status mid-stream) would leave the transport
	// waiting on the agent and the agent waiting on the status, for ever.
	// Once the response is over the rest of the agent's stream has nowhere
	// to go; closing it is what the HTTP/2 server does anyway when the
	// handler returns. (An HTTP/1.1 body's Close may block reading what is
	// left, so it is not closed here.)
	agentBody io.Closer
}

func (b *doneBody) Close() error {
	if b.agentBody != nil {
		_ = b.agentBody.Close()
	}
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
