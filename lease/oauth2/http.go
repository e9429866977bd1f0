package oauth2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// maxBody bounds what is read of an endpoint's answer: a token response is
// a few hundred bytes, and a hostile endpoint must not fill our memory.
const maxBody = 64 << 10

var errBodyTooLarge = fmt.Errorf("response larger than %d KiB", maxBody>>10)

// newHTTPClient is the client for the token and revocation endpoints: TLS
// verified against the system roots plus caFile, timeouts on every phase, no
// proxy from the environment, no redirects (a redirect would carry the
// client's credentials to another URL), and bodies cut at maxBody.
func newHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate in it", caFile)
		}
	}
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext:           (&net.Dialer{Timeout: min(timeout, 10*time.Second)}).DialContext,
		TLSHandshakeTimeout:   min(timeout, 10*time.Second),
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport:     limitBody{tr},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// limitBody cuts every response body at maxBody: reading past it fails.
type limitBody struct{ rt http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxBody}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly maxBody from a longer one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, errBodyTooLarge
		}
		return b.rc.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// Revoke revokes the grant's access token at the RFC 7009 endpoint when one
// is configured (otherwise the token simply expires at the provider). A
// token the provider no longer knows is revoked as far as RFC 7009 is
// concerned: it answers 200.
func (s *Source) Revoke(ctx context.Context, g lease.Grant) error {
	if s.cfg.RevocationURL == "" || g.Value == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	form := url.Values{"token": {g.Value}, "token_type_hint": {"access_token"}}
	if s.clientSecret == "" && s.cfg.ClientID != "" {
		form.Set("client_id", s.cfg.ClientID) // a public client (RFC 7009 2.1)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return s.wrapErr("revocation", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if s.clientSecret != "" {
		// RFC 6749 2.3.1: id and secret are form-encoded before Basic.
		req.SetBasicAuth(url.QueryEscape(s.cfg.ClientID), url.QueryEscape(s.clientSecret))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return s.wrapErr("revocation", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // reuse the connection; the body is never quoted
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		s.log.Debug("oauth2: token revoked", "source", s.cfg.Name)
		return nil
	}
	out := &lease.SourceError{Status: resp.StatusCode,
		Err: fmt.Errorf("oauth2 %s: revocation endpoint: HTTP %d", s.cfg.Name, resp.StatusCode)}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		out.Kind = lease.ErrDenied
	}
	return out
}
