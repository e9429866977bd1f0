// Package githubtest is a FAKE of the three GitHub REST endpoints behind
// GitHub App installation tokens, for tests only: GitHub itself cannot run
// here. It is a real HTTPS server on 127.0.0.1 that verifies the app JWT's
// RS256 signature with go-jose (credproxy signs with golang-jwt, so the two
// check each other), tracks every token it issues with its expiry on a
// clock the test controls, and serves an "API" that accepts live tokens only.
// It can misbehave on demand (reject, hang, oversized or malformed answers).
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// Clock is where the fake reads the time: a lease.Clock, or RealClock.
type Clock interface{ Now() time.Time }

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Mode says how the mint endpoint answers.
type Mode int

// Mint modes.
const (
	OK            Mode = iota // verify the JWT and issue a token
	RejectEcho                // 401 whose JSON message quotes the request's Authorization header
	HugeBody                  // 201 with a 4 MiB body
	Hang                      // never answer (until the client gives up)
	NoExpiry                  // 201 with a token but no expires_at
	GarbageExpiry             // 201 with expires_at "tomorrow-ish"
)

// Token is one issued installation token.
type Token struct {
	Value   string
	Expires time.Time
	Revoked bool
	Body    MintBody // what the mint request asked for
}

// MintBody is the mint request's JSON body.
type MintBody struct {
	Permissions  map[string]string `json:"permissions"`
	Repositories []string          `json:"repositories"`
}

// Server is the fake. Its fields are set by Start; change behaviour with
// the setters, which are safe while requests run.
type Server struct {
	URL    string // https://127.0.0.1:PORT
	CAFile string // PEM of the server's certificate, for caFile
	AppID  int64
	Inst   int64

	t     testing.TB
	pub   *rsa.PublicKey
	clock Clock
	addr  string

	mu       sync.Mutex
	srv      *httptest.Server
	mode     Mode
	ttl      time.Duration
	hold     chan struct{} // mints wait until it is closed (nil: no wait)
	tokens   []*Token
	jwts     []string // every app JWT presented, verified or not
	rejected []string // why JWTs were rejected
	mints    int      // mint requests answered with a token
	deletes  int      // DELETE /installation/token requests that revoked a token
	quit     chan struct{}
	apiSeen  []string // credentials the API saw, in order
}

// Start runs the fake for app appID's installation inst, whose key is
// key's public half. Tokens live ttl on clock.
func Start(t testing.TB, clock Clock, appID, inst int64, key *rsa.PrivateKey, ttl time.Duration) *Server {
	t.Helper()
	s := &Server{AppID: appID, Inst: inst, t: t, pub: &key.PublicKey, clock: clock, ttl: ttl, quit: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	s.URL = s.srv.URL
	s.CAFile = filepath.Join(t.TempDir(), "github-ca.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		close(s.quit) // releases held and hung requests
		srv := s.srv
		s.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
	})
	return s
}

func (s *Server) serve(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", s.mint)
	mux.HandleFunc("DELETE /installation/token", s.revoke)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	s.srv = srv
}

// Stop takes the server down: connections are refused until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	srv.Close()
}

// Restart listens again on the same address (and certificate).
func (s *Server) Restart() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("githubtest: relisten on %s: %v", s.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serve(ln)
}

// SetMode sets how the mint endpoint answers from now on.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// SetTTL sets the lifetime of tokens issued from now on.
func (s *Server) SetTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = d
}

// Hold makes mint requests wait until the returned release is called.
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.hold = ch
	return sync.OnceFunc(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hold == ch {
			s.hold = nil
		}
		close(ch)
	})
}

// Mints is how many tokens were issued.
func (s *Server) Mints() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mints
}

// Deletes is how many tokens were revoked with DELETE /installation/token.
func (s *Server) Deletes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deletes
}

// Tokens returns copies of every issued token, oldest first.
func (s *Server) Tokens() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Token, len(s.tokens))
	for i, t := range s.tokens {
		out[i] = *t
	}
	return out
}

// JWTs returns every app JWT presented to the mint endpoint.
func (s *Server) JWTs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.jwts...)
}

// Rejections lists why app JWTs were refused (empty when all verified).
func (s *Server) Rejections() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}

// Live reports whether tok was issued, is not revoked and has not expired.
func (s *Server) Live(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked(tok) != nil
}

func (s *Server) liveLocked(tok string) *Token {
	now := s.clock.Now()
	for _, t := range s.tokens {
		if t.Value == tok && !t.Revoked && now.Before(t.Expires) {
			return t
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-GitHub-Request-Id", "C0DE:1234:ABCD")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func message(msg string) map[string]string {
	return map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"}
}

func (s *Server) mint(w http.ResponseWriter, r *http.Request) {
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	s.jwts = append(s.jwts, raw)
	mode, hold, quit := s.mode, s.hold, s.quit
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		case <-quit:
			return
		}
	}
	switch mode {
	case RejectEcho:
		// Like an error page that quotes the request: the JWT in the body.
		writeJSON(w, http.StatusUnauthorized, message("A JSON web token could not be decoded: "+r.Header.Get("Authorization")))
		return
	case Hang:
		select {
		case <-r.Context().Done():
		case <-quit:
		}
		return
	}
	if why := s.verify(r, raw); why != "" {
		s.mu.Lock()
		s.rejected = append(s.rejected, why)
		s.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, message(why))
		return
	}
	if id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64); id != s.Inst {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	var body MintBody
	if b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16)); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeJSON(w, http.StatusBadRequest, message("Problems parsing JSON"))
			return
		}
	}
	s.issue(w, mode, body)
}

func (s *Server) issue(w http.ResponseWriter, mode Mode, body MintBody) {
	var b [20]byte
	_, _ = rand.Read(b[:])
	tok := &Token{Value: "ghs_test" + hex.EncodeToString(b[:]), Body: body}
	s.mu.Lock()
	tok.Expires = s.clock.Now().Add(s.ttl).Truncate(time.Second) // GitHub's expires_at has whole seconds
	s.tokens = append(s.tokens, tok)
	s.mints++
	s.mu.Unlock()
	resp := map[string]any{"token": tok.Value, "expires_at": tok.Expires.UTC().Format(time.RFC3339),
		"permissions": body.Permissions, "repository_selection": "selected"}
	switch mode {
	case HugeBody:
		resp["padding"] = strings.Repeat("x", 4<<20)
	case NoExpiry:
		delete(resp, "expires_at")
	case GarbageExpiry:
		resp["expires_at"] = "tomorrow-ish"
	}
	writeJSON(w, http.StatusCreated, resp)
}

// verify checks the app JWT as GitHub does, with go-jose: RS256 signed by
// the app's key, iss the app ID, iat not in the future, exp in the future
// and at most ten minutes after iat. It returns why not, or "".
func (s *Server) verify(r *http.Request, raw string) string {
	if r.Header.Get("Accept") != "application/vnd.github+json" || r.Header.Get("X-GitHub-Api-Version") == "" {
		return "missing Accept or X-GitHub-Api-Version"
	}
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "not an RS256 JWT: " + err.Error()
	}
	var c josejwt.Claims
	if err := tok.Claims(s.pub, &c); err != nil {
		return "bad signature: " + err.Error()
	}
	now := s.clock.Now()
	switch {
	case c.Issuer != strconv.FormatInt(s.AppID, 10):
		return fmt.Sprintf("iss %q is not app %d", c.Issuer, s.AppID)
	case c.IssuedAt == nil || c.IssuedAt.Time().After(now):
		return "iat missing or in the future"
	case c.Expiry == nil || !c.Expiry.Time().After(now):
		return "exp missing or past"
	case c.Expiry.Time().Sub(c.IssuedAt.Time()) > 10*time.Minute:
		return "exp more than 10 minutes after iat"
	}
	return ""
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.liveLocked(tok)
	if t == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(message("Bad credentials"))
		return
	}
	t.Revoked = true
	s.deletes++
	w.WriteHeader(http.StatusNoContent)
}

// API is an HTTPS handler standing for api.github.com and git over HTTPS:
// it answers 200 "ok" only to a live token, sent as "Bearer T", "token T"
// or Basic x-access-token:T, and 401 otherwise.
func (s *Server) API() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		var tok string
		if user, pass, ok := r.BasicAuth(); ok && user == "x-access-token" {
			tok = pass
		} else if v, ok := strings.CutPrefix(h, "Bearer "); ok {
			tok = v
		} else if v, ok := strings.CutPrefix(h, "token "); ok {
			tok = v
		}
		s.mu.Lock()
		s.apiSeen = append(s.apiSeen, tok)
		live := s.liveLocked(tok) != nil
		s.mu.Unlock()
		if !live {
			writeJSON(w, http.StatusUnauthorized, message("Bad credentials"))
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
}

// APISeen lists the tokens the API was shown, in order.
func (s *Server) APISeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.apiSeen...)
}

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

// Key returns an RSA key for a test app, the same one for the whole test
// binary: generating one costs a noticeable fraction of a second.
func Key(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return key
}

// WriteKey writes k to dir/name as PEM: PKCS#8 ("PRIVATE KEY") or, with
// pkcs1, PKCS#1 ("RSA PRIVATE KEY", what GitHub hands out). It returns the path.
func WriteKey(t testing.TB, dir, name string, k *rsa.PrivateKey, pkcs1 bool) string {
	t.Helper()
	blk := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	if !pkcs1 {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		blk = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
