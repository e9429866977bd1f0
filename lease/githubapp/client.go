package githubapp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// maxBody bounds what is read of any answer from GitHub (a token answer is
// well under 4 KiB).
const maxBody = 1 << 20

// apiVersion is the REST API version credproxy speaks.
const apiVersion = "2022-11-28"

// Operations, as they appear in error text.
const (
	opMint   = "mint installation token"
	opRevoke = "revoke installation token"
)

// newHTTPClient verifies GitHub's certificate against the system roots plus
// caFile's; verification cannot be turned off. It follows no redirect: a
// 3xx would send the app JWT or a token somewhere it was not configured for.
func newHTTPClient(caFile string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("github app: caFile: %w", err)
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("github app: caFile %s: no PEM certificate in it", caFile)
		}
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// call sends one request authenticated with bearer (the app JWT, or the
// token being revoked) and decodes a 2xx answer's JSON into out (nil: the
// body is ignored). Every failure is a *lease.SourceError whose text quotes
// nothing GitHub sent but its status and request id: an error body can
// echo the Authorization header, and the JWT or token with it.
func (s *Source) call(ctx context.Context, op, method, url, bearer string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return sourceErr(op, 0, nil, err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", apiVersion)
	req.Header.Set("User-Agent", "credproxy")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return sourceErr(op, 0, nil, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	switch {
	case err != nil:
		return sourceErr(op, 0, resp.Header, fmt.Errorf("reading the answer: %w", err))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return sourceErr(op, resp.StatusCode, resp.Header, statusErr(op, resp.StatusCode))
	case len(b) > maxBody:
		return sourceErr(op, 0, resp.Header, fmt.Errorf("the answer is larger than %d bytes", maxBody))
	case out == nil:
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		// Not err's text: json errors can quote the input.
		return sourceErr(op, 0, resp.Header, errors.New("the answer is not the expected JSON"))
	}
	return nil
}

// statusErr explains a refusal from its status alone.
func statusErr(op string, status int) error {
	hint := ""
	switch {
	case status == http.StatusUnauthorized && op == opMint:
		hint = ": GitHub rejected the app JWT (check appID, privateKeyFile and this host's clock)"
	case status == http.StatusNotFound && op == opMint:
		hint = ": no such installation of this app (check installationID)"
	case status == http.StatusForbidden || status == http.StatusUnprocessableEntity:
		hint = ": permissions or repositories not granted to the installation, or a rate limit"
	}
	return fmt.Errorf("HTTP %d %s%s", status, http.StatusText(status), hint)
}

// requestID is the shape of X-GitHub-Request-Id, quoted in errors for
// GitHub's support; anything else is left out.
var requestID = regexp.MustCompile(`^[0-9A-Fa-f:]{1,64}$`)

// sourceErr classifies a failure for the manager: 401, 403, 404 and 422
// will not heal by retrying (lease.ErrDenied); others are transient.
func sourceErr(op string, status int, h http.Header, err error) error {
	msg := "github app: " + op
	if id := h.Get("X-GitHub-Request-Id"); requestID.MatchString(id) {
		msg += " (request " + id + ")"
	}
	e := &lease.SourceError{Status: status, Err: fmt.Errorf("%s: %w", msg, err)}
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity:
		e.Kind = lease.ErrDenied
	}
	return e
}
