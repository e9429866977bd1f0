package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// store is op.Storage: the example storage of zitadel/oidc for what these
// tests never reach (auth requests, signing keys, users), and its own
// in-memory token store for what they do, so that token lifetimes are set
// by -token-ttl instead of the example's fixed five minutes.
type store struct {
	*storage.Storage
	ttl             time.Duration
	cc, rtc, server idSecret

	mu      sync.Mutex
	access  map[string]*token                // by token id
	refresh map[string]*storage.RefreshToken // by token
	stats   stats
}

type token struct {
	id, client, subject string
	scopes, audience    []string
	expires             time.Time
}

// stats is what /test/stats reports: the tests count mints at the server.
type stats struct {
	ClientCredentials int `json:"client_credentials"` // access tokens minted by that grant
	RefreshToken      int `json:"refresh_token"`      // access tokens minted by refreshing
	Revoked           int `json:"revoked"`            // tokens revoked at /revoke
	Introspected      int `json:"introspected"`
	ActiveTokens      int `json:"active_tokens"`
}

var (
	_ op.Storage                  = (*store)(nil)
	_ op.ClientCredentialsStorage = (*store)(nil)
)

func newStore(ttl time.Duration, cc, rtc, server idSecret) *store {
	return &store{
		Storage: storage.NewStorage(storage.NewUserStore("https://127.0.0.1")),
		ttl:     ttl, cc: cc, rtc: rtc, server: server,
		access: map[string]*token{}, refresh: map[string]*storage.RefreshToken{},
	}
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// --- clients ---------------------------------------------------------------

func (s *store) client(id string) (*client, bool) {
	switch id {
	case s.cc.id:
		return &client{id: id, grants: []oidc.GrantType{oidc.GrantTypeClientCredentials}}, true
	case s.rtc.id:
		return &client{id: id, grants: []oidc.GrantType{oidc.GrantTypeRefreshToken}}, true
	case s.server.id:
		return &client{id: id}, true
	}
	return nil, false
}

func (s *store) secretOK(id, secret string) bool {
	for _, c := range []idSecret{s.cc, s.rtc, s.server} {
		if c.id == id && c.secret == secret {
			return true
		}
	}
	return false
}

func (s *store) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if c, ok := s.client(id); ok {
		return c, nil
	}
	return nil, errors.New("no such client")
}

func (s *store) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	if !s.secretOK(id, secret) {
		return errors.New("wrong client id or secret")
	}
	return nil
}

func (s *store) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	if id != s.cc.id || !s.secretOK(id, secret) {
		return nil, errors.New("wrong client id or secret")
	}
	c, _ := s.client(id)
	return c, nil
}

func (s *store) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	return &oidc.JWTTokenRequest{Subject: id, Audience: []string{id}, Scopes: scopes}, nil
}

// --- tokens ----------------------------------------------------------------

func (s *store) newAccessLocked(client, subject string, scopes, audience []string) *token {
	t := &token{id: randomID(), client: client, subject: subject, scopes: scopes,
		audience: audience, expires: time.Now().Add(s.ttl)}
	s.access[t.id] = t
	return t
}

func (s *store) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.ClientCredentials++
	t := s.newAccessLocked(req.GetSubject(), req.GetSubject(), req.GetScopes(), req.GetAudience())
	return t.id, t.expires, nil
}

// CreateAccessAndRefreshTokens serves the refresh_token grant with rotation
// (RFC 6819 5.2.2.3): the presented refresh token and its access token die,
// a new pair is issued.
func (s *store) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[current]
	if !ok || time.Now().After(rt.Expiration) {
		return "", "", time.Time{}, op.ErrInvalidRefreshToken
	}
	delete(s.refresh, current)
	delete(s.access, rt.AccessToken)
	t := s.newAccessLocked(rt.ApplicationID, rt.UserID, req.GetScopes(), rt.Audience)
	next := *rt
	next.ID, next.Token, next.AccessToken = randomID(), "", t.id
	next.Token = next.ID
	next.Expiration = time.Now().Add(time.Hour)
	s.refresh[next.Token] = &next
	s.stats.RefreshToken++
	return t.id, next.Token, t.expires, nil
}

func (s *store) TokenRequestByRefreshToken(_ context.Context, rt string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.refresh[rt]
	if !ok {
		return nil, op.ErrInvalidRefreshToken
	}
	cp := *t
	return storage.RefreshTokenRequestFromBusiness(&cp), nil
}

func (s *store) GetRefreshTokenInfo(_ context.Context, _ string, rt string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.refresh[rt]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return t.UserID, t.Token, nil
}

// RevokeToken ends an access token (by id) or a refresh token (by value).
// RFC 7009 2.2: a token that is unknown already is revoked as far as the
// client can tell, so that is no error.
func (s *store) RevokeToken(_ context.Context, idOrToken, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.access[idOrToken]; ok {
		if t.client != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.access, idOrToken)
		s.stats.Revoked++
		return nil
	}
	if t, ok := s.refresh[idOrToken]; ok {
		if t.ApplicationID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
		}
		delete(s.refresh, idOrToken)
		delete(s.access, t.AccessToken)
		s.stats.Revoked++
	}
	return nil
}

// SetIntrospectionFromToken answers the resource server: active while the
// token exists and has not expired.
func (s *store) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Introspected++
	t, ok := s.access[tokenID]
	if !ok || t.subject != subject || time.Now().After(t.expires) {
		return errors.New("token is not active")
	}
	resp.Subject, resp.ClientID, resp.Scope = t.subject, t.client, t.scopes
	resp.Expiration = oidc.FromTime(t.expires)
	return nil
}

// --- test-only endpoints ---------------------------------------------------

// seedRefreshToken issues a refresh token to the refresh client, standing in
// for the user's authorization that would normally come first.
func (s *store) seedRefreshToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	rt := &storage.RefreshToken{
		ID: randomID(), AuthTime: time.Now(), ApplicationID: s.rtc.id, UserID: "test-user",
		Audience: []string{s.rtc.id}, Expiration: time.Now().Add(time.Hour),
		Scopes: slices.DeleteFunc(r.URL.Query()["scope"], func(v string) bool { return v == "" }),
	}
	rt.Token = rt.ID
	s.refresh[rt.Token] = rt
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"refresh_token": rt.Token})
}

func (s *store) serveStats(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	st := s.stats
	for _, t := range s.access {
		if time.Now().Before(t.expires) {
			st.ActiveTokens++
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

// client is an op.Client that is only ever a confidential client of the
// token endpoint: no redirects, no ID tokens.
type client struct {
	id     string
	grants []oidc.GrantType
}

func (c *client) GetID() string                        { return c.id }
func (c *client) RedirectURIs() []string               { return nil }
func (c *client) PostLogoutRedirectURIs() []string     { return nil }
func (c *client) ApplicationType() op.ApplicationType  { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod          { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType   { return nil }
func (c *client) GrantTypes() []oidc.GrantType         { return c.grants }
func (c *client) LoginURL(string) string               { return "" }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return time.Minute }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
