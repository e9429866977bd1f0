package lease_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
)

func TestReuseWithinTTL(t *testing.T) {
	h := newHarness(t, policy)
	first := h.wantValue("agent-a", "sk-test-1")
	for range 50 {
		h.advance(5 * time.Second)
		if got := h.get("agent-b"); got.LeaseID != first.LeaseID {
			t.Fatalf("Get within TTL returned lease %s, want the live lease %s", got.LeaseID, first.LeaseID)
		}
	}
	h.wantCounts(1, 0, 0)
	h.wantEvents("lease.created")
}

func TestConcurrentFirstGetsAcquireOnce(t *testing.T) {
	h := newHarness(t, policy)
	release := h.src.HoldAcquire()
	const n = 1000
	ids, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tk, err := h.m.Get(context.Background(), "openai", fmt.Sprintf("agent-%d", i), use)
			ids[i], errs[i] = tk.LeaseID, err
		})
	}
	for h.src.Acquires() == 0 {
		runtime.Gosched() // until the one acquisition is underway
	}
	release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("Get %d = lease %q, err %v; want lease %q and no error", i, ids[i], errs[i], ids[0])
		}
	}
	h.wantCounts(1, 0, 0)
}

func TestAcquireFailureBacksOff(t *testing.T) {
	h := newHarness(t, policy)
	h.src.FailAcquire(fmt.Errorf("vault: permission denied: %w", lease.ErrDenied))
	wantFail := func(acquires int) {
		t.Helper()
		_, err := h.m.Get(context.Background(), "openai", "agent-a", use)
		if err == nil || !errors.Is(err, lease.ErrDenied) || !strings.Contains(err.Error(), `credential "openai": acquire`) {
			t.Fatalf("Get during outage: err = %v, want the wrapped source error", err)
		}
		if got := h.src.Acquires(); got != acquires {
			t.Fatalf("source acquisitions = %d, want %d (Gets during backoff must fail fast)", got, acquires)
		}
	}
	wantFail(1)
	wantFail(1)
	h.advance(249 * time.Millisecond) // first backoff is 250ms
	wantFail(1)
	h.advance(time.Millisecond)
	wantFail(2) // retried, failed again: now 500ms
	h.advance(499 * time.Millisecond)
	wantFail(2)
	h.src.FailAcquire(nil)
	h.advance(time.Millisecond)
	h.wantValue("agent-a", "sk-test-1")
	h.wantCounts(3, 0, 0)
	h.wantEvents("lease.failed", "lease.failed", "lease.created")
}

func TestPerIdentityLeases(t *testing.T) {
	p := policy
	p.PerIdentity = true
	h := newHarness(t, p)
	a := h.wantValue("agent-a", "sk-test-1")
	h.wantValue("agent-b", "sk-test-2")
	if again := h.get("agent-a"); again.LeaseID != a.LeaseID {
		t.Fatalf("agent-a got lease %s, then %s; want its own lease reused", a.LeaseID, again.LeaseID)
	}
	infos := h.m.List()
	if len(infos) != 2 || infos[0].Identity != "agent-a" || infos[1].Identity != "agent-b" {
		t.Fatalf("List = %+v, want one lease each for agent-a and agent-b", infos)
	}
	h.wantCounts(2, 0, 0)
}

func TestSharedLeaseRecordsWhoTriggeredIt(t *testing.T) {
	h := newHarness(t, policy)
	a := h.get("agent-a")
	if b := h.get("agent-b"); b.LeaseID != a.LeaseID || b.Identity != "agent-b" {
		t.Fatalf("agent-b got %v, want the shared lease %s issued to agent-b", b, a.LeaseID)
	}
	if got := h.events()[0]["identity"]; got != "agent-a" {
		t.Fatalf("lease.created identity = %v, want agent-a, who triggered it", got)
	}
	if infos := h.m.List(); len(infos) != 1 || infos[0].Identity != "" {
		t.Fatalf("List = %+v, want one shared lease (identity \"\")", infos)
	}
}

func TestGetErrors(t *testing.T) {
	h := newHarness(t, policy)
	_, err := h.m.Get(context.Background(), "github", "agent-a", use)
	if !errors.Is(err, lease.ErrUnknownCredential) || !strings.Contains(err.Error(), `"github"`) {
		t.Fatalf("Get(github) err = %v, want ErrUnknownCredential naming github", err)
	}
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := h.m.Get(context.Background(), "openai", "agent-a", use); !errors.Is(err, lease.ErrClosed) {
		t.Fatalf("Get after Shutdown err = %v, want ErrClosed", err)
	}
}

func TestGetHonoursCallerContext(t *testing.T) {
	h := newHarness(t, policy)
	release := h.src.HoldAcquire()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.m.Get(ctx, "openai", "agent-a", use); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: err = %v, want context.Canceled", err)
	}
}

func TestUnauthorizedWithoutLoops(t *testing.T) {
	h := newHarness(t, policy)
	tk1 := h.wantValue("agent-a", "sk-test-1")
	h.m.Unauthorized(tk1, use)
	lease.Settle(h.m)
	h.wantCounts(1, 0, 1)
	tk2 := h.wantValue("agent-a", "sk-test-2")

	h.m.Unauthorized(tk2, use) // second 401 inside the 2m window: ignored
	h.m.Unauthorized(tk1, use) // a ticket of a lease already gone: ignored
	lease.Settle(h.m)
	h.wantValue("agent-a", "sk-test-2")
	h.wantCounts(2, 0, 1)
	if !strings.Contains(h.logs.String(), "401 again") {
		t.Fatalf("the ignored second 401 was not logged; logs:\n%s", h.logs.String())
	}

	h.advance(2 * time.Minute) // window over: a 401 forces a re-acquisition again
	h.m.Unauthorized(h.get("agent-a"), use)
	lease.Settle(h.m)
	h.wantValue("agent-a", "sk-test-3")
	h.wantEvents("lease.created", "lease.revoked:upstream_401", "lease.created",
		"lease.revoked:upstream_401", "lease.created")
}

func TestManualRevoke(t *testing.T) {
	h := newHarness(t, policy)
	tk := h.get("agent-a")
	if err := h.m.Revoke(context.Background(), "cpl_nope", "manual"); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("Revoke(unknown) err = %v, want ErrNotFound", err)
	}
	if err := h.m.Revoke(context.Background(), tk.LeaseID, "manual"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	h.wantCounts(1, 0, 1)
	h.wantValue("agent-a", "sk-test-2")
	h.wantEvents("lease.created", "lease.revoked:manual", "lease.created")
}

func TestTicketPrintsRedacted(t *testing.T) {
	h := newHarness(t, policy)
	tk := h.get("agent-a")
	b, err := tk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	printed := []string{fmt.Sprint(tk), fmt.Sprintf("%+v", tk), fmt.Sprintf("%#v", tk), fmt.Sprintf("%s", tk), string(b)}
	printed = append(printed, tk.LogValue().String())
	for _, s := range printed {
		if strings.Contains(s, "sk-test") || !strings.Contains(s, "[redacted]") {
			t.Errorf("printed ticket %q: want [redacted] and no value", s)
		}
	}
}

// The store's TTL runs from before its answer arrived: a slow acquisition
// must not push the lease's expiry past the store's.
func TestTermCountsFromTheRequest(t *testing.T) {
	h := newHarness(t, policy)
	release := h.src.HoldAcquire()
	done := make(chan error, 1)
	go func() {
		_, err := h.m.Get(context.Background(), "openai", "agent-a", use)
		done <- err
	}()
	for h.src.Acquires() == 0 {
		time.Sleep(time.Millisecond) // until the source call has begun
	}
	h.clock.Advance(time.Minute) // the store takes a minute to answer
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := h.m.List()[0].Expires, t0.Add(policy.TTL); !got.Equal(want) {
		t.Fatalf("lease expires %v, want %v: the term counts from the request, not the answer", got, want)
	}
}
