package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/credproxy/credproxy/rules"
)

// sign signs req when d's rule signs instead of injecting (sign: aws_sigv4).
// send calls it last, after every header change credproxy makes, so that the
// host, path, query, x-amz-* headers and body signed are exactly what the
// transport writes. A signed payload is buffered here, up to the rule's
// maxBodyBytes, to be hashed; an unsigned one streams through untouched.
func (p *Proxy) sign(req *http.Request, rt *route, d decision) *refusal {
	r := d.rule
	if r == nil || r.Sign == nil {
		return nil
	}
	var hash []byte
	if r.SignsPayload(req) {
		var ref *refusal
		if hash, ref = bufferBody(req, r); ref != nil {
			return ref
		}
	}
	// The wall clock, not an injectable one: the upstream checks the
	// signature's time against its own.
	err := r.SignRequest(req, valuesOf(d.ticket), hash, time.Now())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rules.ErrUnsignable):
		return unsignable(r.Name, reasonOf(err))
	default:
		// The credential lacks a field or holds a bad byte: the operator's
		// to fix, so the log says which; the agent gets the fixed text.
		p.log.Warn("request not signed", "rule", r.Name, "credential", r.Credential,
			"err", p.echo.scrub(rt.dest, err.Error()))
		return injectionFailed(r.Name, r.Credential)
	}
}

// reasonOf is an ErrUnsignable error's text after `rule "x": request cannot
// be signed: `, for the agent.
func reasonOf(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, rules.ErrUnsignable.Error()+": "); ok {
		return after
	}
	return msg
}

// bufferBody reads req's body, at most the rule's maxBodyBytes, and puts it
// back as a body of known length; it returns the body's SHA-256. A chunked
// body of unknown length leaves with a Content-Length.
func bufferBody(req *http.Request, r *rules.Rule) ([]byte, *refusal) {
	if req.Body == nil || req.Body == http.NoBody {
		sum := sha256.Sum256(nil)
		return sum[:], nil
	}
	limit := r.Sign.AWSSigV4.MaxBodyBytes
	if req.ContentLength > int64(limit) {
		return nil, bodyTooLarge(r.Name, limit) // refused before reading a byte
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, int64(limit)+1))
	_ = req.Body.Close()
	switch {
	case err != nil && req.Context().Err() != nil:
		return nil, clientClosed(r.Name)
	case err != nil:
		return nil, unsignable(r.Name, "the request body could not be read: "+err.Error())
	case len(body) > limit:
		return nil, bodyTooLarge(r.Name, limit)
	}
	sum := sha256.Sum256(body)
	req.ContentLength = int64(len(body))
	req.TransferEncoding = nil
	if len(body) == 0 {
		// A zero length with a body would be sent as unknown length, chunked.
		req.Body, req.GetBody = http.NoBody, nil
		return sum[:], nil
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return sum[:], nil
}
