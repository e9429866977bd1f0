package lease_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// reconfHarness is a manager over three credentials, each on its own test
// source: keep, gone and changed.
type reconfHarness struct {
	*harness
	srcs map[string]*leasetest.Source
}

func newReconfHarness(t *testing.T) *reconfHarness {
	t.Helper()
	h := &reconfHarness{harness: newHarness(t, policy), srcs: map[string]*leasetest.Source{}}
	var creds []lease.Credential
	for _, name := range []string{"keep", "gone", "changed"} {
		h.srcs[name] = leasetest.NewSource()
		creds = append(creds, lease.Credential{Name: name, SourceName: "test", Source: h.srcs[name], Policy: policy, Definition: name + "-v1"})
	}
	_ = h.m.Shutdown(context.Background()) // newHarness's own, unused
	h.m = lease.NewManager(creds, h.options())
	t.Cleanup(func() { _ = h.m.Shutdown(context.Background()) })
	return h
}

func (h *reconfHarness) getCred(name string) (lease.Ticket, error) {
	return h.m.Get(context.Background(), name, "agent-a", use)
}

func (h *reconfHarness) mustGet(name string) lease.Ticket {
	h.t.Helper()
	tk, err := h.getCred(name)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", name, err)
	}
	return tk
}

// revokedFor lists the credentials of lease.revoked events with reason.
func (h *reconfHarness) revokedFor(reason string) []string {
	var out []string
	for _, e := range h.events() {
		if e["event"] == "lease.revoked" && e["reason"] == reason {
			out = append(out, e["credential"].(string))
		}
	}
	slices.Sort(out)
	return out
}

func TestReconfigureKeepsUnchangedAndRevokesRemovedAndChanged(t *testing.T) {
	h := newReconfHarness(t)
	keep, changed := h.mustGet("keep"), h.mustGet("changed")
	h.mustGet("gone")
	newChanged, fresh := leasetest.NewSource(), leasetest.NewSource()
	err := h.m.Reconfigure(context.Background(), []lease.Credential{
		{Name: "keep", SourceName: "test", Source: leasetest.NewSource(), Policy: policy, Definition: "keep-v1"},
		{Name: "changed", SourceName: "test", Source: newChanged, Policy: policy, Definition: "changed-v2"},
		{Name: "fresh", SourceName: "test", Source: fresh, Policy: policy, Definition: "fresh-v1"},
	})
	if err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	// Reconfigure returns once the revocations are done: no Settle needed.
	if got := h.revokedFor("config_changed"); !slices.Equal(got, []string{"changed", "gone"}) {
		t.Fatalf("config_changed revocations for %q, want changed and gone; audit:\n%s", got, h.audit.String())
	}
	if h.srcs["gone"].Revokes() != 1 || h.srcs["changed"].Revokes() != 1 {
		t.Errorf("old sources revoked gone %d, changed %d times; want 1 each", h.srcs["gone"].Revokes(), h.srcs["changed"].Revokes())
	}
	if got := h.mustGet("keep"); got.LeaseID != keep.LeaseID || got.Value != keep.Value {
		t.Errorf("unchanged credential: lease %s after reload, want %s kept", got.LeaseID, keep.LeaseID)
	}
	if h.srcs["keep"].Acquires() != 1 {
		t.Errorf("unchanged credential acquired %d times, want 1", h.srcs["keep"].Acquires())
	}
	if _, err := h.getCred("gone"); !errors.Is(err, lease.ErrUnknownCredential) {
		t.Errorf("Get(gone) after reload: %v, want ErrUnknownCredential", err)
	}
	got := h.mustGet("changed")
	if got.LeaseID == changed.LeaseID || newChanged.Acquires() != 1 {
		t.Errorf("changed credential: lease %s (was %s), new source acquired %d times; want a new lease from the new source",
			got.LeaseID, changed.LeaseID, newChanged.Acquires())
	}
	if h.mustGet("fresh"); fresh.Acquires() != 1 {
		t.Errorf("new credential: %d acquisitions, want 1", fresh.Acquires())
	}
	for _, info := range h.m.List() {
		if info.Credential == "gone" {
			t.Errorf("List still shows a lease of the removed credential: %+v", info)
		}
	}
}

// A policy change is a changed definition too.
func TestReconfigurePolicyChangeRevokes(t *testing.T) {
	h := newReconfHarness(t)
	before := h.mustGet("keep")
	p := policy
	p.IdleTimeout *= 2
	err := h.m.Reconfigure(context.Background(), []lease.Credential{
		{Name: "keep", SourceName: "test", Source: h.srcs["keep"], Policy: p, Definition: "keep-v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.revokedFor("config_changed"); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("config_changed revocations %q, want keep", got)
	}
	if after := h.mustGet("keep"); after.LeaseID == before.LeaseID {
		t.Errorf("lease %s kept across a policy change", before.LeaseID)
	}
}

// An acquisition in flight when its credential is removed brings back a
// lease nobody may use: it is revoked (config_changed) and the Get fails as
// for any unknown credential.
func TestReconfigureDuringAcquisition(t *testing.T) {
	h := newReconfHarness(t)
	release := h.srcs["gone"].HoldAcquire()
	done := make(chan error, 1)
	go func() {
		_, err := h.getCred("gone")
		done <- err
	}()
	for h.srcs["gone"].Acquires() == 0 {
		runtime.Gosched()
	}
	if err := h.m.Reconfigure(context.Background(), []lease.Credential{
		{Name: "keep", SourceName: "test", Source: h.srcs["keep"], Policy: policy, Definition: "keep-v1"},
	}); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; !errors.Is(err, lease.ErrUnknownCredential) {
		t.Fatalf("Get in flight across the removal: %v, want ErrUnknownCredential", err)
	}
	lease.Settle(h.m)
	h.wantEventsOf("gone", "lease.created", "lease.revoked:config_changed")
	if n := len(h.m.List()); n != 0 {
		t.Errorf("%d leases held after the removed credential's acquisition, want 0", n)
	}
}

// Under -race: Gets of a credential both configs hold never fail and keep
// one lease while reloads add and remove another.
func TestReconfigureConcurrentWithGets(t *testing.T) {
	h := newReconfHarness(t)
	first := h.mustGet("keep")
	keep := lease.Credential{Name: "keep", SourceName: "test", Source: h.srcs["keep"], Policy: policy, Definition: "keep-v1"}
	other := lease.Credential{Name: "gone", SourceName: "test", Source: h.srcs["gone"], Policy: policy, Definition: "gone-v1"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tk, err := h.getCred("keep")
				if err == nil && tk.LeaseID != first.LeaseID {
					err = errors.New("lease changed: " + tk.LeaseID)
				}
				if err != nil {
					errs <- err
					return
				}
				_, _ = h.getCred("gone") // may or may not exist
			}
		})
	}
	for i := range 50 {
		creds := []lease.Credential{keep}
		if i%2 == 0 {
			creds = append(creds, other)
		}
		if err := h.m.Reconfigure(context.Background(), creds); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Get(keep) during reloads: %v", err)
	}
	lease.Settle(h.m)
	for _, info := range h.m.List() {
		if info.Credential == "gone" {
			t.Errorf("a lease of the removed credential is still held: %+v", info)
		}
	}
}

// wantEventsOf checks the audit events of one credential.
func (h *reconfHarness) wantEventsOf(credential string, want ...string) {
	h.t.Helper()
	var got []string
	for _, e := range h.events() {
		if e["credential"] != credential {
			continue
		}
		name := e["event"].(string)
		if r, ok := e["reason"].(string); ok {
			name += ":" + r
		}
		got = append(got, name)
	}
	if !slices.Equal(got, want) {
		h.t.Fatalf("audit events of %s = %q, want %q", credential, got, want)
	}
}

// A failed acquisition from a definition replaced meanwhile is audited but
// sets no backoff on the new definition: its first Get goes to the new
// source at once.
func TestReconfigureIgnoresTheOldDefinitionsFailure(t *testing.T) {
	h := newReconfHarness(t)
	h.srcs["changed"].FailAcquire(errors.New("old store down"))
	release := h.srcs["changed"].HoldAcquire()
	done := make(chan error, 1)
	go func() {
		_, err := h.getCred("changed")
		done <- err
	}()
	for h.srcs["changed"].Acquires() == 0 {
		runtime.Gosched()
	}
	newSrc := leasetest.NewSource()
	if err := h.m.Reconfigure(context.Background(), []lease.Credential{
		{Name: "changed", SourceName: "test", Source: newSrc, Policy: policy, Definition: "changed-v2"},
	}); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err == nil {
		t.Fatal("Get in flight on the failing old source succeeded")
	}
	if tk, err := h.getCred("changed"); err != nil || newSrc.Acquires() != 1 {
		t.Fatalf("Get after the reload: %v (lease %s), new source acquired %d times; want a lease from the new source, no backoff",
			err, tk.LeaseID, newSrc.Acquires())
	}
	h.wantEventsOf("changed", "lease.failed", "lease.created")
}
