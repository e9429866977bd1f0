// Package oauth2 is the OAuth 2.0 source: one lease.Source per `sources:`
// entry of type oauth2 that mints an access token at a token endpoint with
// golang.org/x/oauth2 (client_credentials, refresh_token, or jwt_bearer
// with a Google service-account key or a PEM key) and revokes it at an
// RFC 7009 endpoint. The token is the lease: it is never renewed, the
// lease.Manager acquires a new one before it expires. Scheduling is the
// manager's job, not this package's.
package oauth2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	xoauth2 "golang.org/x/oauth2"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
)

// Grant types.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantJWTBearer         = "jwt_bearer"
)

// Config is one `sources:` entry of type oauth2.
type Config struct {
	Name     string // the source's name, for errors and logs
	Grant    string // client_credentials (default), refresh_token or jwt_bearer
	TokenURL string // overrides a key file's token_uri when set
	ClientID string
	// ClientSecretFile holds the client secret (required for
	// client_credentials; optional for refresh_token). It is read once.
	ClientSecretFile string
	Scopes           []string
	Audience         string // sent as `audience` (client_credentials) or the JWT's aud (jwt_bearer)
	// RefreshTokenFile holds the refresh token (refresh_token). A token the
	// provider rotates is written back here atomically.
	RefreshTokenFile string
	// KeyFile is a Google service-account JSON key (jwt_bearer); PrivateKeyFile
	// a PEM RSA key whose JWT is issued by ClientID (jwt_bearer).
	KeyFile        string
	PrivateKeyFile string
	RevocationURL  string // RFC 7009 endpoint; "" = tokens are left to expire
	CAFile         string // extra roots for the endpoints; system roots always apply
	// Timeout bounds one call to an endpoint, whatever the caller's context
	// allows (0 = 30s): a hung token endpoint must not hold a lease slot.
	Timeout time.Duration
	Logger  *slog.Logger // nil discards
}

// Source mints access tokens for one configured oauth2 source. It is safe
// for concurrent use.
type Source struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
	minter minter
	// clientSecret authenticates the client at the token and revocation
	// endpoints ("" for a public client or jwt_bearer).
	clientSecret string
	// secrets are the values of the configuration that no error may carry
	// (client secret, private key, refresh token), for the scrubber.
	secrets *secretSet
}

// minter fetches one new token with the HTTP client in ctx.
type minter func(ctx context.Context) (*xoauth2.Token, error)

// New checks cfg, reads its key files and builds the HTTP client. Nothing is
// sent until the first Acquire.
func New(cfg Config) (*Source, error) {
	if cfg.Grant == "" {
		cfg.Grant = GrantClientCredentials
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := newHTTPClient(cfg.CAFile, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("oauth2 %s: %w", cfg.Name, err)
	}
	s := &Source{cfg: cfg, client: client, log: log, secrets: &secretSet{vals: map[string]string{}}}
	if s.minter, err = s.newMinter(); err != nil {
		return nil, fmt.Errorf("oauth2 %s: %w", cfg.Name, err)
	}
	return s, nil
}

func (s *Source) newMinter() (minter, error) {
	switch s.cfg.Grant {
	case GrantClientCredentials:
		return s.clientCredentials()
	case GrantRefreshToken:
		return s.refreshToken()
	case GrantJWTBearer:
		return s.jwtBearer()
	}
	return nil, fmt.Errorf("grant must be client_credentials, refresh_token or jwt_bearer, not %q", s.cfg.Grant)
}

// readSecretFile reads a one-line secret and remembers it for the scrubber.
func (s *Source) readSecretFile(field, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", field, path)
	}
	s.secrets.set(field, v)
	return v, nil
}

// wireExpiresIn is the token response's expires_in in seconds (0 when
// absent or unreadable). x/oauth2 fills Token.ExpiresIn on some paths only
// (clientcredentials keeps it in the raw response), so both are read; a
// number sent as a string (as some providers do) counts too.
func wireExpiresIn(tok *xoauth2.Token) int64 {
	if tok.ExpiresIn != 0 {
		return tok.ExpiresIn
	}
	var f float64
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		f = v
	case json.Number:
		f, _ = v.Float64()
	case string:
		f, _ = strconv.ParseFloat(v, 64)
	}
	switch {
	case f != f: // NaN
		return 0
	case f > maxExpiresIn:
		return maxExpiresIn + 1
	case f < -maxExpiresIn:
		return -1
	}
	return int64(f)
}

// maxExpiresIn is the longest expires_in taken as the token's lifetime (ten
// years, in seconds); a larger one leaves the lease to the credential's ttl.
const maxExpiresIn = 10 * 365 * 24 * 3600

// Acquire mints a new access token. Its TTL is the token's own lifetime,
// which the manager treats as a hard deadline; a token without expires_in
// gets the credential's TTL.
func (s *Source) Acquire(ctx context.Context, _ lease.Request) (lease.Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	tok, err := s.minter(context.WithValue(ctx, xoauth2.HTTPClient, s.client))
	if err != nil {
		return lease.Grant{}, s.wrapErr("token", err)
	}
	if tok.AccessToken == "" {
		return lease.Grant{}, &lease.SourceError{Err: fmt.Errorf("oauth2 %s: token endpoint returned no access_token", s.cfg.Name)}
	}
	g := lease.Grant{
		Value: tok.AccessToken,
		Data:  map[string]string{"access_token": tok.AccessToken},
	}
	switch expiresIn := wireExpiresIn(tok); {
	case expiresIn > maxExpiresIn:
		// A lifetime beyond any real token's (or one that would overflow
		// a Duration): the credential's ttl bounds the lease instead.
	case expiresIn > 0:
		// The provider's own figure. The manager counts a grant's TTL from
		// before the request, so this never outlives the token, and a slow
		// moment between the answer and here cannot turn a live token
		// into an "expired" one (a 2s token says expires_in 1).
		g.TTL = time.Duration(expiresIn) * time.Second
	case !tok.Expiry.IsZero(): // a token source that only sets Expiry
		g.TTL = time.Until(tok.Expiry)
		if g.TTL <= 0 {
			return lease.Grant{}, &lease.SourceError{Err: fmt.Errorf("oauth2 %s: token endpoint returned an expired token", s.cfg.Name)}
		}
	}
	s.log.Debug("oauth2: token minted", "source", s.cfg.Name, "grant", s.cfg.Grant, "ttl", g.TTL)
	return g, nil
}

// Renew always fails permanently: an access token cannot be extended, the
// manager acquires a new one instead (it never calls Renew on a grant that
// is not Renewable; this is for a caller that does).
func (s *Source) Renew(context.Context, lease.Grant, time.Duration) (lease.Grant, error) {
	return lease.Grant{}, &lease.SourceError{Kind: lease.ErrPermanent,
		Err: fmt.Errorf("oauth2 %s: access tokens are not renewable", s.cfg.Name)}
}

// secretSet holds the configured secrets no error text may carry, by field
// (a rotated refresh token replaces the old one).
type secretSet struct {
	mu   sync.Mutex
	vals map[string]string
}

func (ss *secretSet) set(field, v string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.vals[field] = v
}

func (ss *secretSet) scrubber() *secret.Scrubber {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	vals := make([]string, 0, len(ss.vals))
	for _, v := range ss.vals {
		vals = append(vals, v)
	}
	return secret.NewScrubber(vals...)
}

// wrapErr turns a failed endpoint call into a *lease.SourceError. The
// provider's response body is never quoted (it can echo the request, client
// secret included); only its HTTP status and, when it is one of RFC 6749's
// registered codes, its error code. Other errors (transport, TLS, timeouts,
// an oversized body) are masked of every configured secret.
func (s *Source) wrapErr(endpoint string, err error) error {
	var re *xoauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		msg := fmt.Sprintf("oauth2 %s: %s endpoint: HTTP %d", s.cfg.Name, endpoint, status)
		if registeredErrorCodes[re.ErrorCode] {
			msg += " " + re.ErrorCode
		}
		out := &lease.SourceError{Status: status, Err: errors.New(msg)}
		if status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden {
			out.Kind = lease.ErrDenied // a refused client or grant: retrying in a loop won't help
		}
		return out
	}
	text := s.secrets.scrubber().String(err.Error())
	return &lease.SourceError{Err: &scrubbed{msg: fmt.Sprintf("oauth2 %s: %s endpoint: %s", s.cfg.Name, endpoint, text), err: err}}
}

// registeredErrorCodes are RFC 6749 5.2's error codes (and RFC 7009's
// unsupported_token_type): fixed words that carry nothing of the request.
var registeredErrorCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
	"unsupported_token_type": true, "temporarily_unavailable": true, "server_error": true,
}

// scrubbed is an error whose text was masked; errors.Is still sees the
// cause (context.DeadlineExceeded for a hung endpoint).
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
