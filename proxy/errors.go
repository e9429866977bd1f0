package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"

	rfc9457 "github.com/credproxy/credproxy/internal/problem"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/rules"
)

// refusal is every way credproxy declines a request: a policy refusal, a
// credential it cannot get, an upstream it cannot reach. It is turned into a
// response, a status, an outcome label and a log line in exactly one place,
// Proxy.refuse, so that no path forgets to count or log itself.
//
// reason is shown to the agent; it is built from rule, credential and host
// names only, never from a value or an upstream's body. Refusals are made
// only by the constructors below, one per problem kind, so that no call site
// picks a status, an outcome or a type URI of its own.
type refusal struct {
	kind       *problem
	status     int
	outcome    string // the outcome label of credproxy_requests_total
	rule       string
	credential string
	reason     string
}

func (r *refusal) Error() string { return r.reason }

// problem is one kind of refusal (RFC 9457 "problem type"): its type URI,
// fixed title, HTTP status, and the outcome label it is counted under.
// Agents and SDKs switch on the type, so a type is never renamed or reused
// for another meaning.
type problem struct {
	slug    string // the type URI is rfc9457.TypePrefix + slug
	title   string
	status  int
	outcome string
}

func (k *problem) typeURI() string { return rfc9457.TypePrefix + k.slug }

// The problem kinds. The outcome label of each refusal is decided here and
// nowhere else: a policy refusal is "denied", anything credproxy could not
// do is "error". README.md ("How a request is decided") lists them.
var (
	probBadRequest        = &problem{"bad-request", "Malformed proxy request", http.StatusBadRequest, outcomeDenied}
	probNotAProxyRequest  = &problem{"not-a-proxy-request", "Not a forward-proxy request", http.StatusBadRequest, outcomeDenied}
	probSchemeNotProxied  = &problem{"scheme-not-proxied", "Scheme not proxied in absolute form", http.StatusBadRequest, outcomeDenied}
	probProxyAuthRequired = &problem{"proxy-auth-required", "Proxy authentication required", http.StatusProxyAuthRequired, outcomeDenied}
	probMisdirected       = &problem{"misdirected", "Host does not match the CONNECT target", http.StatusMisdirectedRequest, outcomeDenied}
	probUnmatchedDenied   = &problem{"unmatched-denied", "No rule allows this request", http.StatusForbidden, outcomeDenied}
	probIdentityDenied    = &problem{"identity-denied", "Rule not granted to this identity", http.StatusForbidden, outcomeDenied}
	probCleartextRefused  = &problem{"cleartext-refused", "Credential refused over cleartext", http.StatusForbidden, outcomeDenied}
	probAmbiguousPath     = &problem{"ambiguous-path", "Ambiguous request path", http.StatusForbidden, outcomeDenied}
	probMethodRefused     = &problem{"method-refused", "Method not forwarded", http.StatusForbidden, outcomeDenied}
	probOwnAddress        = &problem{"own-address", "Destination is credproxy itself", http.StatusForbidden, outcomeDenied}
	probUnsignable        = &problem{"unsignable-request", "Request cannot be signed as sent", http.StatusBadRequest, outcomeDenied}
	probBodyTooLarge      = &problem{"body-too-large", "Request body too large to sign", http.StatusRequestEntityTooLarge, outcomeDenied}
	probTaskRequired      = &problem{"task-required", "Credential needs a task", http.StatusForbidden, outcomeDenied}
	probTaskNotOpen       = &problem{"task-not-open", "Task unknown or ended", http.StatusForbidden, outcomeDenied}
	probCredUnavailable   = &problem{"credential-unavailable", "Credential unavailable", http.StatusBadGateway, outcomeError}
	probInjectionFailed   = &problem{"injection-failed", "Credential could not be injected", http.StatusBadGateway, outcomeError}
	probUpstreamDown      = &problem{"upstream-unreachable", "Upstream unreachable", http.StatusBadGateway, outcomeError}
	probUpstreamTimeout   = &problem{"upstream-timeout", "Upstream timed out", http.StatusBadGateway, outcomeError}
	probUpstreamError     = &problem{"upstream-error", "Upstream exchange failed", http.StatusBadGateway, outcomeError}
	probUnscannable       = &problem{"unscannable-encoding", "Upstream body in an encoding credproxy cannot scan", http.StatusBadGateway, outcomeError}
	probTooManyRequests   = &problem{"too-many-requests", "Too many requests in flight", http.StatusServiceUnavailable, outcomeError}
	probTooManyConns      = &problem{"too-many-connections", "Too many connections", http.StatusServiceUnavailable, outcomeError}
	probInternal          = &problem{"internal", "Internal proxy error", http.StatusInternalServerError, outcomeError}
	probClientClosed      = &problem{"client-closed", "Agent closed the request", statusClientClosed, outcomeError}
)

// statusClientClosed is nginx's 499: counted and logged, never read, since
// the agent has gone.
const statusClientClosed = 499

// problems lists every kind, for tests and documentation.
var problems = []*problem{
	probBadRequest, probNotAProxyRequest, probSchemeNotProxied, probProxyAuthRequired, probMisdirected,
	probUnmatchedDenied, probIdentityDenied, probCleartextRefused, probAmbiguousPath, probMethodRefused, probOwnAddress,
	probUnsignable, probBodyTooLarge, probTaskRequired, probTaskNotOpen,
	probCredUnavailable, probInjectionFailed, probUpstreamDown, probUpstreamTimeout, probUpstreamError, probUnscannable,
	probTooManyRequests, probTooManyConns, probInternal, probClientClosed,
}

func refuseAs(k *problem, rule, credential, reason string) *refusal {
	return &refusal{kind: k, status: k.status, outcome: k.outcome, rule: rule, credential: credential, reason: reason}
}

// badRequest: a CONNECT or absolute-form target that does not parse.
func badRequest(reason string) *refusal { return refuseAs(probBadRequest, "", "", reason) }

// notAProxyRequest: an origin-form request, sent to credproxy as if it were
// the server.
func notAProxyRequest() *refusal {
	return refuseAs(probNotAProxyRequest, "", "", "credproxy is a forward proxy: point HTTPS_PROXY/HTTP_PROXY at it")
}

// schemeNotProxied: an absolute-form request for a scheme other than http.
func schemeNotProxied(scheme string) *refusal {
	return refuseAs(probSchemeNotProxied, "", "",
		"absolute-form "+scheme+":// requests are not proxied; use CONNECT (HTTPS_PROXY)")
}

// proxyAuthRequired: no, or no valid, Proxy-Authorization under clients:.
func proxyAuthRequired(reason string) *refusal {
	return refuseAs(probProxyAuthRequired, "", "", reason)
}

// misdirected: an intercepted request whose Host or :authority is not the
// CONNECT target (domain fronting).
func misdirected(tunnel rules.Dest) *refusal {
	return refuseAs(probMisdirected, "", "", "Host header does not match the CONNECT target "+tunnel.String())
}

// unmatchedDenied: no rule allows what (a destination, or method, destination
// and path) and unmatched is deny.
func unmatchedDenied(what string) *refusal {
	return refuseAs(probUnmatchedDenied, "", "", "no rule allows "+what+" and unmatched is deny")
}

// identityDenied: the rule that matched does not list the caller.
func identityDenied(rule, identity string) *refusal {
	return refuseAs(probIdentityDenied, rule, "", fmt.Sprintf("rule %q is not for identity %q", rule, identity))
}

// cleartextRefused: a ruled request that would leave without verified TLS.
func cleartextRefused(rule string) *refusal {
	return refuseAs(probCleartextRefused, rule, "",
		fmt.Sprintf("rule %q sends its credential only over TLS that credproxy verifies: use https://", rule))
}

// ambiguousPath: encoded separators or dot-segments an upstream might
// resolve differently from the rules.
func ambiguousPath(dest rules.Dest) *refusal {
	return refuseAs(probAmbiguousPath, "", "",
		"the path has encoded separators or dot-segments, which credproxy does not forward to "+dest.String())
}

// methodRefused: CONNECT or TRACE inside a tunnel.
func methodRefused(method string) *refusal {
	return refuseAs(probMethodRefused, "", "", method+" is not forwarded by credproxy")
}

// ownAddress: the destination resolved to one of credproxy's listeners.
func ownAddress(rule string, dest rules.Dest) *refusal {
	return refuseAs(probOwnAddress, rule, "", dest.String()+" is credproxy itself; it does not proxy to its own listeners")
}

// unsignable: a signing rule's request that credproxy will not sign as
// sent; reason is rules.ErrUnsignable's text, which names no value.
func unsignable(rule, reason string) *refusal {
	return refuseAs(probUnsignable, rule, "", reason)
}

// bodyTooLarge: a body over the rule's maxBodyBytes, which a signed payload
// must be buffered to hash.
func bodyTooLarge(rule string, limit int) *refusal {
	return refuseAs(probBodyTooLarge, rule, "", fmt.Sprintf(
		"rule %q signs the request body, which credproxy buffers up to %d bytes (sign.aws_sigv4.maxBodyBytes); "+
			"this body is larger. A service that accepts UNSIGNED-PAYLOAD (S3) can use payload: unsigned", rule, limit))
}

// taskRequired: a `scope: task` credential requested outside any task (or
// with several open and none named); public is lease.PublicMessage's text.
func taskRequired(rule, credential, public string) *refusal {
	return refuseAs(probTaskRequired, rule, credential, public)
}

// taskNotOpen: the request named a task that is unknown, ended, expired or
// another identity's.
func taskNotOpen(rule, credential, public string) *refusal {
	return refuseAs(probTaskNotOpen, rule, credential, public)
}

// taskRefusal is the refusal for a lease error about tasks; nil for any
// other error.
func taskRefusal(rule *rules.Rule, err error) *refusal {
	switch {
	case errors.Is(err, lease.ErrNoTask):
		return taskRequired(rule.Name, rule.Credential, lease.PublicMessage(err))
	case errors.Is(err, lease.ErrUnknownTask), errors.Is(err, lease.ErrTaskEnded):
		return taskNotOpen(rule.Name, rule.Credential, lease.PublicMessage(err))
	}
	return nil
}

// credentialUnavailable: the lease manager could not supply the credential;
// public is lease.PublicMessage's fixed text, never the store's own.
func credentialUnavailable(rule, credential, public string) *refusal {
	return refuseAs(probCredUnavailable, rule, credential, public)
}

// injectionFailed: the rule's template could not render the credential.
func injectionFailed(rule, credential string) *refusal {
	return refuseAs(probInjectionFailed, rule, credential, fmt.Sprintf("credential %q could not be injected", credential))
}

// upstreamUnreachable, upstreamTimeout and upstreamError: the round trip
// failed; text is the transport error, already scrubbed and without the URL.
func upstreamUnreachable(rule string, dest rules.Dest, text string) *refusal {
	return refuseAs(probUpstreamDown, rule, "", "upstream unreachable: "+dest.String()+": "+text)
}

func upstreamTimeout(rule string, dest rules.Dest, text string) *refusal {
	return refuseAs(probUpstreamTimeout, rule, "", "upstream timed out: "+dest.String()+": "+text)
}

func upstreamError(rule string, dest rules.Dest, text string) *refusal {
	return refuseAs(probUpstreamError, rule, "", "upstream "+dest.String()+": "+text)
}

// unscannableEncoding: a body credproxy would have to pass on unmasked.
func unscannableEncoding(rule string, err error) *refusal {
	return refuseAs(probUnscannable, rule, "", err.Error())
}

// tooManyRequests: limits.maxInflight requests are already upstream.
func tooManyRequests(rule string, limit int) *refusal {
	return refuseAs(probTooManyRequests, rule, "",
		fmt.Sprintf("credproxy already has %d requests in flight (limits.maxInflight)", limit))
}

// tooManyConnections: limits.maxConnections connections are already open.
func tooManyConnections(open int64) *refusal {
	return refuseAs(probTooManyConns, "", "",
		fmt.Sprintf("credproxy already holds %d connections (limits.maxConnections)", open))
}

// internalError: a state credproxy's own code should never reach.
func internalError(reason string) *refusal { return refuseAs(probInternal, "", "", reason) }

// clientClosed: the agent went away before the upstream answered.
func clientClosed(rule string) *refusal {
	return refuseAs(probClientClosed, rule, "", "the agent went away")
}

// errorResponse builds a complete problem+json response for req (the body
// is internal/problem's, shared with the admin server).
func errorResponse(req *http.Request, r *refusal) *http.Response {
	d := rfc9457.New(r.kind.slug, r.kind.title, r.status, r.reason)
	d.Rule, d.Credential = r.rule, r.credential
	body := d.JSON()
	h := make(http.Header, 6)
	rfc9457.Header(h, len(body))
	h.Set("X-Credproxy-Error", "1")
	if r.status == http.StatusProxyAuthRequired {
		h.Set("Proxy-Authenticate", `Basic realm="credproxy"`)
	}
	return &http.Response{
		Status:        strconv.Itoa(r.status) + " " + http.StatusText(r.status),
		StatusCode:    r.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// writeResponse copies a complete (small, in-memory) response to w.
func writeResponse(w http.ResponseWriter, resp *http.Response) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	_ = resp.Body.Close()
}

// upstreamErrorText describes a transport error without the request URL:
// *url.Error prints the URL, and with query-parameter injection the URL holds
// the credential.
func upstreamErrorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	return err.Error()
}
