package lease_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// storeText stands for whatever a store (or a proxy in front of it) said:
// PublicMessage must never show it.
const storeText = "<html>X-Vault-Token: hvs.CAESIstoretext</html>"

func TestPublicMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error // what the source returns; nil: see setup
		want string
	}{
		{"server error", &lease.SourceError{Status: 502, Err: errTest(storeText)},
			`credential "openai": store test unavailable (HTTP 5xx)`},
		{"sealed", &lease.SourceError{Status: 503, Err: errTest("vault: Vault is sealed")},
			`credential "openai": store test unavailable (HTTP 5xx)`},
		{"denied", &lease.SourceError{Status: 403, Kind: lease.ErrDenied, Err: errTest(storeText)},
			`credential "openai": access denied by store test (HTTP 4xx)`},
		{"login refused", &lease.SourceError{Status: 400, Kind: lease.ErrDenied, Err: errTest(storeText)},
			`credential "openai": access denied by store test (HTTP 4xx)`},
		{"unreachable", &lease.SourceError{Err: fmt.Errorf("dial %s: %w", storeText, errTest("refused"))},
			`credential "openai": store test unavailable`},
		{"timeout", &lease.SourceError{Err: fmt.Errorf("%s: %w", storeText, context.DeadlineExceeded)},
			`credential "openai": source timed out`},
		{"plain error", errTest(storeText), `credential "openai": store test unavailable`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, policy)
			h.src.FailAcquire(tc.err)
			for i := range 2 { // the failure itself, then the backoff that repeats it
				_, err := h.m.Get(context.Background(), "openai", "agent-a", use)
				if got := lease.PublicMessage(err); got != tc.want {
					t.Errorf("Get #%d: PublicMessage(%q) = %q, want %q", i+1, err, got, tc.want)
				}
			}
		})
	}

	h := newHarness(t, policy)
	_, err := h.m.Get(context.Background(), "nope", "agent-a", use)
	if got, want := lease.PublicMessage(err), `credential "nope": unknown`; got != want || !errors.Is(err, lease.ErrUnknownCredential) {
		t.Errorf("unknown credential: PublicMessage = %q, want %q (err %v)", got, want, err)
	}
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = h.m.Get(context.Background(), "openai", "agent-a", use)
	if got, want := lease.PublicMessage(err), `credential "openai": lease manager is shutting down`; got != want {
		t.Errorf("after Shutdown: PublicMessage = %q, want %q", got, want)
	}
	if got := lease.PublicMessage(nil); got != "" {
		t.Errorf("PublicMessage(nil) = %q, want empty", got)
	}
}

func TestPublicMessageCallerGaveUp(t *testing.T) {
	h := newHarness(t, policy)
	release := h.src.HoldAcquire()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := h.m.Get(ctx, "openai", "agent-a", use)
	if got, want := lease.PublicMessage(err), `credential "openai": request cancelled while acquiring`; got != want {
		t.Errorf("cancelled Get: PublicMessage = %q, want %q", got, want)
	}
}

// A store's error page that echoes a request carries a held credential into
// the error: the manager masks every value it holds before the text reaches
// Get's error, the log, the audit trail or the admin API.
func TestSourceErrorsAreScrubbedOfHeldValues(t *testing.T) {
	h := newHarness(t, policy)
	other := leasetest.NewSource()
	m := lease.NewManager([]lease.Credential{
		{Name: "openai", SourceName: "test", Source: h.src, Policy: policy},
		{Name: "reports", SourceName: "vault", Source: other, Policy: policy},
	}, h.options())
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	tk, err := m.Get(context.Background(), "openai", "agent-a", use)
	if err != nil || tk.Value != "sk-test-1" {
		t.Fatalf("Get(openai) = %q, %v; want sk-test-1", tk.Value, err)
	}
	echo := func(op string) error {
		return &lease.SourceError{Status: 502, Err: errTest(op + ": upstream echoed Authorization: Bearer sk-test-1")}
	}

	other.FailAcquire(echo("acquire"))
	_, err = m.Get(context.Background(), "reports", "agent-a", use)
	if err == nil || !strings.Contains(err.Error(), "upstream echoed") {
		t.Fatalf("Get(reports) with a failing store: want its (masked) error, got %v", err)
	}
	var se *lease.SourceError
	if !errors.As(err, &se) || se.Status != 502 {
		t.Errorf("Get's error must keep the SourceError in its chain; got %v", err)
	}
	_, err2 := m.Get(context.Background(), "reports", "agent-a", use) // during the backoff

	h.src.FailRenew(echo("renew"))
	h.clock.Advance(4 * time.Minute)
	lease.Settle(m)
	if _, err := m.Get(context.Background(), "openai", "agent-a", use); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(4 * time.Minute) // renewal due at 8m: it fails, and is audited
	lease.Settle(m)

	h.src.FailRevoke(echo("revoke"))
	// The admin server answers a failed revoke with this error's text.
	revokeErr := m.Revoke(context.Background(), tk.LeaseID, "")
	if revokeErr == nil || !strings.Contains(revokeErr.Error(), "upstream echoed") {
		t.Fatalf("revoke with a failing store = %v, want the masked error", revokeErr)
	}

	for name, text := range map[string]string{
		"Get error": err.Error(), "Get error during backoff": err2.Error(), "audit": h.audit.String(),
		"log": h.logs.String(), "admin revoke": revokeErr.Error(),
	} {
		if strings.Contains(text, "sk-test-1") {
			t.Errorf("%s contains a held value:\n%s", name, text)
		}
	}
	for _, want := range []string{"acquire: upstream echoed", "renew: upstream echoed", "revoke: upstream echoed"} {
		if !strings.Contains(h.audit.String(), want) {
			t.Errorf("audit trail lacks the masked store error %q:\n%s", want, h.audit.String())
		}
	}
}
