package vault

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
)

// newClient builds a Client for s that logs through the test and is closed
// when the test ends.
func newClient(t *testing.T, s *vaulttest.Server, auth Auth) *Client {
	t.Helper()
	c, err := NewClient(Config{
		Address: s.Addr,
		Auth:    auth,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func rootAuth(s *vaulttest.Server) Auth { return Auth{Token: s.RootToken} }

func reqFor() lease.Request { return lease.Request{Credential: "test", TTL: 15 * time.Minute} }

func acquire(t *testing.T, src lease.Source) lease.Grant {
	t.Helper()
	g, err := src.Acquire(t.Context(), reqFor())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return g
}

// noValues fails when err's message contains any of the secret values.
func noValues(t *testing.T, err error, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(err.Error(), v) {
			t.Fatalf("error leaks a secret value %q: %v", v, err)
		}
	}
}

// mustErr fails unless err is non-nil and mentions every want.
func mustErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error mentioning %q, got nil", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("want an error mentioning %q, got: %v", w, err)
		}
	}
}

// retryable says whether the manager would back off and retry err.
func retryable(err error) bool {
	return err != nil && !errors.Is(err, lease.ErrPermanent) && !errors.Is(err, lease.ErrDenied) &&
		!errors.Is(err, context.Canceled)
}

func (c *Client) counts() (logins, renewals int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logins, c.renewals
}
