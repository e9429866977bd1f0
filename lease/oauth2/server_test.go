package oauth2_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/oauthtest"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/oauth2"
)

// These tests run against the real authorization server of internal/oauthtest
// (zitadel/oidc's OpenID provider): it mints, introspects and revokes.

func TestClientCredentialsMintAndRevoke(t *testing.T) {
	srv := oauthtest.Start(t, time.Hour)
	src := ccSource(t, srv, nil)
	g, err := src.Acquire(context.Background(), lease.Request{Credential: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Value == "" || g.Data["access_token"] != g.Value || len(g.Data) != 1 {
		t.Fatalf("grant: has value %v, data keys %v", g.Value != "", len(g.Data))
	}
	if g.Renewable || g.TTL <= 59*time.Minute || g.TTL > time.Hour {
		t.Errorf("grant: renewable %v, TTL %v; want a non-renewable grant living the token's 1h", g.Renewable, g.TTL)
	}
	if !active(t, srv, g.Value) {
		t.Fatal("the minted token is not active at the server")
	}
	if err := src.Revoke(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	if active(t, srv, g.Value) {
		t.Error("the token is still active after Revoke")
	}
	if st := srv.Stats(t); st.ClientCredentials != 1 || st.Revoked != 1 {
		t.Errorf("server counted %+v; want one mint, one revocation", st)
	}
	if _, err := src.Renew(context.Background(), g, time.Minute); !errorsIs(err, lease.ErrPermanent) {
		t.Errorf("Renew: %v; want ErrPermanent", err)
	}
}

// A thousand first requests at once share one acquisition: one token minted.
func TestConcurrentFirstRequestsMintOnce(t *testing.T) {
	srv := oauthtest.Start(t, time.Hour)
	e := newManager(t, ccSource(t, srv, nil), lease.Policy{TTL: 15 * time.Minute, AutoRenew: true, IdleTimeout: 10 * time.Minute})
	const n = 1000
	tokens := e.FirstGets(t, n)
	for i, tk := range tokens {
		if tk != tokens[0] {
			t.Fatalf("request %d got another token than request 0", i)
		}
	}
	if st := srv.Stats(t); st.ClientCredentials != 1 {
		t.Errorf("server minted %d tokens for %d concurrent first requests; want 1", st.ClientCredentials, n)
	}
	if !active(t, srv, tokens[0]) {
		t.Error("the shared token is not active")
	}
}

// A 2s token under steady use is re-minted before it expires, with no failed
// request: the manager rotates it at half its life (the token's TTL is a hard
// cap). Lease time runs on a fake clock, moved in 100ms steps; when a
// rotation is due, the test waits for the replacement lease (an event) before
// time moves on. The provider reports expires_in in whole seconds, rounded
// down (a 2s token says 1), so the term is read from the lease itself.
func TestShortTokenReMintedBeforeExpiry(t *testing.T) {
	srv := oauthtest.Start(t, 2*time.Second)
	e := newManager(t, ccSource(t, srv, nil), lease.Policy{
		TTL: 15 * time.Minute, RenewBeforeExpiry: 5 * time.Minute, IdleTimeout: 10 * time.Minute, AutoRenew: true})
	first := e.Get(t).Value
	order := []string{first}
	cur := e.Current(t, "")
	if term := cur.Expires.Sub(cur.Issued); term <= 0 || term > 2*time.Second {
		t.Fatalf("lease term %v; want the token's lifetime, at most 2s", term)
	}
	rotations := 0
	for i := 1; i <= 50; i++ { // 5s of fake time
		e.Clock.Advance(100 * time.Millisecond)
		now := e.Clock.Now()
		if term := cur.Expires.Sub(cur.Issued); !now.Before(cur.Expires.Add(-term / 2)) {
			old := cur
			cur = e.Current(t, old.ID)
			if !cur.Issued.Before(old.Expires) {
				t.Fatalf("replacement issued at %v, after the old token expired at %v", cur.Issued, old.Expires)
			}
			rotations++
		}
		tk := e.Get(t) // a failure is fatal: zero failed requests
		if tk.Value != order[len(order)-1] {
			order = append(order, tk.Value)
			if !active(t, srv, tk.Value) {
				t.Fatalf("step %d: a new token that the server says is inactive", i)
			}
		}
	}
	if rotations < 4 || len(order) != rotations+1 {
		t.Errorf("%d rotations, %d distinct tokens seen over 5s of <=2s tokens; want >= 4 and one more token than rotations",
			rotations, len(order))
	}
	if st := srv.Stats(t); st.ClientCredentials != len(order) {
		t.Errorf("server minted %d tokens; the agent saw %d", st.ClientCredentials, len(order))
	}
	// Rotated-out tokens are revoked at the provider, at their own expiry
	// at the latest, which the fake clock has passed for all but the last.
	testutil.WaitFor(t, func() bool { return srv.Stats(t).Revoked >= len(order)-2 }, "revocation of rotated-out tokens")
	if active(t, srv, order[0]) {
		t.Error("the first token is still active after its rotation")
	}
	if strings.Contains(e.Audit.String(), "lease.failed") {
		t.Errorf("a lease operation failed:\n%s", e.Audit.String())
	}
}

// An idle lease is dropped, revoked at the provider (which then says the
// token is inactive) and audited.
func TestIdleTokenRevoked(t *testing.T) {
	srv := oauthtest.Start(t, time.Hour)
	e := newManager(t, ccSource(t, srv, nil), lease.Policy{TTL: 15 * time.Minute, IdleTimeout: time.Minute, AutoRenew: true})
	tok := e.Get(t).Value
	e.Clock.Advance(61 * time.Second)
	testutil.WaitFor(t, func() bool { return strings.Contains(e.Audit.String(), `"event":"lease.revoked"`) }, "lease.revoked")
	if !strings.Contains(e.Audit.String(), `"reason":"idle"`) {
		t.Errorf("revocation not audited as idle:\n%s", e.Audit.String())
	}
	if active(t, srv, tok) {
		t.Error("the idle token is still active at the server")
	}
	if st := srv.Stats(t); st.Revoked != 1 {
		t.Errorf("server revoked %d tokens; want 1", st.Revoked)
	}
	if len(e.M.List()) != 0 {
		t.Errorf("the manager still holds %v", e.M.List())
	}
	notIn(t, []string{tok, srv.ClientSecret}, map[string]string{"audit": e.Audit.String(), "logs": e.Logs.String()})
}

// A refresh token the provider rotates is written back atomically, with the
// file's mode; the old one is then refused by the provider.
func TestRefreshTokenRotationPersisted(t *testing.T) {
	srv := oauthtest.Start(t, time.Hour)
	dir := t.TempDir()
	rt0 := srv.SeedRefreshToken(t)
	rtFile := writeFile(t, dir, "refresh-token", rt0+"\n", 0o640)
	src, err := oauth2.New(oauth2.Config{
		Name: "idp", Grant: oauth2.GrantRefreshToken, TokenURL: srv.TokenURL, ClientID: oauthtest.RefreshClientID,
		ClientSecretFile: writeFile(t, dir, "secret", srv.RefreshClientSecret, 0o600),
		RefreshTokenFile: rtFile, RevocationURL: srv.RevokeURL, CAFile: srv.CAFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	prev := rt0
	for i := range 2 {
		g, err := src.Acquire(context.Background(), lease.Request{Credential: "api"})
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		if !active(t, srv, g.Value) {
			t.Fatalf("acquire %d: token not active", i)
		}
		b, _ := os.ReadFile(rtFile)
		now := strings.TrimSpace(string(b))
		if now == prev || now == "" {
			t.Fatalf("acquire %d: refresh token file not updated", i)
		}
		if fi, _ := os.Stat(rtFile); fi.Mode().Perm() != 0o640 {
			t.Errorf("refresh token file mode %v; want 0640 kept", fi.Mode().Perm())
		}
		if status, err := srv.RefreshWith(prev); err != nil || status != 400 {
			t.Errorf("the rotated-out refresh token: HTTP %d, %v; want 400 (refused)", status, err)
		}
		prev = now
	}
	if st := srv.Stats(t); st.RefreshToken != 2 {
		t.Errorf("server refreshed %d times; want 2", st.RefreshToken)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temp files left behind in %s: %v", dir, entries)
	}
}
