// Package githubapp is the GitHub App source: it mints installation access
// tokens (POST /app/installations/{id}/access_tokens, signed in with an RS256
// app JWT) and revokes them (DELETE /installation/token). A token lives an
// hour and cannot be renewed, so each lease is one token and the
// lease.Manager re-mints before expiry; this package schedules nothing.
package githubapp

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/credproxy/credproxy/lease"
)

// DefaultBaseURL is GitHub.com's REST API; GitHub Enterprise Server's is
// https://HOST/api/v3.
const DefaultBaseURL = "https://api.github.com"

// DefaultTimeout bounds one call to GitHub when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is one `sources:` entry of type github_app.
type Config struct {
	AppID          int64
	InstallationID int64
	PrivateKeyFile string // the app's private key: RSA, PEM, PKCS#1 or PKCS#8
	BaseURL        string // "" means DefaultBaseURL
	CAFile         string // PEM roots added to the system's for verifying BaseURL
	// Permissions and Repositories narrow each token below what the
	// installation was granted ({"contents": "read"}; repository names
	// without the owner). Empty means the installation's own.
	Permissions  map[string]string
	Repositories []string
	Timeout      time.Duration // one call to GitHub; 0 means DefaultTimeout
	Clock        lease.Clock   // JWT times and token lifetimes; nil = real time
	Logger       *slog.Logger  // nil discards
}

// Source mints installation tokens for one app installation. It is a
// lease.Source and safe for concurrent use.
type Source struct {
	appID     int64
	install   int64
	key       *rsa.PrivateKey
	mintURL   string
	revokeURL string
	body      []byte // the mint request's JSON body
	hc        *http.Client
	timeout   time.Duration
	clock     lease.Clock
	log       *slog.Logger
}

// New reads the private key and builds the HTTP client. It does not call
// GitHub: the first Acquire does, so a GitHub that is down at start only
// delays the first lease.
func New(cfg Config) (*Source, error) {
	if cfg.AppID <= 0 || cfg.InstallationID <= 0 {
		return nil, errors.New("github app: appID and installationID must be positive")
	}
	key, err := readKey(cfg.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	base, err := baseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	hc, err := newHTTPClient(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(mintRequest{Permissions: cfg.Permissions, Repositories: cfg.Repositories})
	if err != nil {
		return nil, fmt.Errorf("github app: mint request: %w", err)
	}
	s := &Source{
		appID:     cfg.AppID,
		install:   cfg.InstallationID,
		key:       key,
		mintURL:   base + "/app/installations/" + strconv.FormatInt(cfg.InstallationID, 10) + "/access_tokens",
		revokeURL: base + "/installation/token",
		body:      body,
		hc:        hc,
		timeout:   cfg.Timeout,
		clock:     cfg.Clock,
		log:       cfg.Logger,
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.clock == nil {
		s.clock = lease.RealClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// readKey's errors name the file, never its content.
func readKey(path string) (*rsa.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("github app: privateKeyFile is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("github app: privateKeyFile: %w", err)
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(b)
	if err != nil {
		return nil, fmt.Errorf("github app: privateKeyFile %s: not an RSA private key in PEM (PKCS#1 or PKCS#8)", path)
	}
	return key, nil
}

// baseURL checks the API's address. Plain http is for a loopback test
// server only: the app JWT and the tokens must not cross a network in clear.
func baseURL(s string) (string, error) {
	if s == "" {
		return DefaultBaseURL, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		(u.Scheme != "https" && (u.Scheme != "http" || !loopback(u.Hostname()))) {
		return "", fmt.Errorf("github app: baseURL %q: want an https:// URL such as %s (http:// only on loopback)", s, DefaultBaseURL)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// loopback reports whether host (no port) is localhost or a loopback IP.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// mintRequest is the body of POST /app/installations/{id}/access_tokens.
type mintRequest struct {
	Permissions  map[string]string `json:"permissions,omitempty"`
	Repositories []string          `json:"repositories,omitempty"`
}

// mintResponse is the part of GitHub's answer that credproxy uses.
type mintResponse struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// appJWT is the app's sign-in for the mint call: RS256, issued a minute in
// the past (GitHub's clock may be behind ours) and expiring in nine minutes,
// under GitHub's ten-minute limit counted from iat.
func (s *Source) appJWT() (string, error) {
	now := s.clock.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(s.appID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	})
	signed, err := t.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("github app: sign app JWT: %w", err)
	}
	return signed, nil
}

// Acquire mints a new installation token. The grant's TTL runs to GitHub's
// expires_at, a hard cap since the token cannot be renewed; req.TTL, if
// shorter, is the manager's business (it re-mints sooner).
func (s *Source) Acquire(ctx context.Context, _ lease.Request) (lease.Grant, error) {
	signed, err := s.appJWT()
	if err != nil {
		return lease.Grant{}, err
	}
	var out mintResponse
	if err := s.call(ctx, opMint, http.MethodPost, s.mintURL, signed, s.body, &out); err != nil {
		return lease.Grant{}, err
	}
	if out.Token == "" || !printable(out.Token) {
		return lease.Grant{}, sourceErr(opMint, 0, nil, errors.New("the answer has no usable token"))
	}
	exp, err := time.Parse(time.RFC3339, out.ExpiresAt)
	if err != nil {
		return lease.Grant{}, sourceErr(opMint, 0, nil, errors.New("the answer has no valid expires_at"))
	}
	ttl := exp.Sub(s.clock.Now())
	if ttl <= 0 {
		return lease.Grant{}, sourceErr(opMint, 0, nil, fmt.Errorf("the token expired on arrival (expires_at %s)", exp.UTC().Format(time.RFC3339)))
	}
	expires := exp.UTC().Format(time.RFC3339)
	s.log.Debug("github app: minted an installation token", "expires_at", expires)
	return lease.Grant{
		Value: out.Token,
		Data:  map[string]string{"token": out.Token},
		// Not the token: the id is shown in the audit trail and /leases.
		SourceLeaseID: fmt.Sprintf("installations/%d/token@%s", s.install, expires),
		TTL:           ttl,
		Renewable:     false,
	}, nil
}

// errNotRenewable: an installation token has a fixed hour; the manager
// rotates (mints anew) instead of renewing since grants are not Renewable.
var errNotRenewable = errors.New("github app: installation tokens cannot be renewed; a new one is minted instead")

// Renew always fails permanently: see errNotRenewable.
func (s *Source) Renew(context.Context, lease.Grant, time.Duration) (lease.Grant, error) {
	return lease.Grant{}, &lease.SourceError{Kind: lease.ErrPermanent, Err: errNotRenewable}
}

// Revoke deletes the token at GitHub, authenticated with the token itself.
// A 401 means GitHub no longer accepts it (expired or revoked already),
// which is what Revoke is for, so it succeeds.
func (s *Source) Revoke(ctx context.Context, g lease.Grant) error {
	tok := g.Value
	if tok == "" {
		tok = g.Data["token"]
	}
	if tok == "" {
		return nil
	}
	err := s.call(ctx, opRevoke, http.MethodDelete, s.revokeURL, tok, nil, nil)
	var se *lease.SourceError
	if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
		s.log.Debug("github app: token already invalid at revocation")
		return nil
	}
	return err
}

// printable reports whether a token can go into a header: visible ASCII.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
