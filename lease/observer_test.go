package lease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/static"
)

type recorder struct {
	mu     sync.Mutex
	active map[string]int
	ops    []string
}

func (r *recorder) LeaseOp(credential, op, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, fmt.Sprintf("%s %s %s", credential, op, result))
}

func (r *recorder) LeasesActive(credential string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active[credential] = n
}

func (r *recorder) SourceOp(string, string, time.Duration, error) {}

func (r *recorder) snapshot() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active["openai"], append([]string(nil), r.ops...)
}

func TestObserverSeesLeaseActivity(t *testing.T) {
	h := newHarness(t, policy)
	rec := &recorder{active: map[string]int{}}
	opts := h.options()
	opts.Observer = rec
	m := lease.NewManager([]lease.Credential{{Name: "openai", SourceName: "test", Source: h.src, Policy: policy}}, opts)
	defer func() { _ = m.Shutdown(context.Background()) }()
	if _, err := m.Get(context.Background(), "openai", "agent-a", use); err != nil {
		t.Fatal(err)
	}
	if n, _ := rec.snapshot(); n != 1 {
		t.Fatalf("LeasesActive(openai) = %d after a Get, want 1", n)
	}
	h.clock.Advance(5 * time.Minute)
	lease.Settle(m)
	n, ops := rec.snapshot()
	if n != 0 || len(ops) != 2 || ops[0] != "openai acquire ok" || ops[1] != "openai revoke ok" {
		t.Fatalf("after the idle timeout: active %d, ops %q; want 0 and acquire ok, revoke ok", n, ops)
	}
}

// A static file rotated on disk is picked up by the next renewal, under the
// same lease.
func TestStaticFileRotationThroughManager(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	writeKey := func(v string) {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey("sk-test-file-1")
	h := newHarness(t, policy)
	m := lease.NewManager([]lease.Credential{
		{Name: "openai", SourceName: "file", Source: static.File{Path: path}, Policy: policy},
	}, h.options())
	defer func() { _ = m.Shutdown(context.Background()) }()
	get := func() lease.Ticket {
		tk, err := m.Get(context.Background(), "openai", "agent-a", use)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	first := get()
	writeKey("sk-test-file-2")
	for range 8 { // renewed at 8m
		h.clock.Advance(time.Minute)
		lease.Settle(m)
		get()
	}
	if tk := get(); tk.Value != "sk-test-file-2" || tk.LeaseID != first.LeaseID {
		t.Fatalf("after renewal Get = %q on lease %s, want sk-test-file-2 on the same lease %s", tk.Value, tk.LeaseID, first.LeaseID)
	}

	// A missing file fails the acquisition with an error naming the path only.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(context.Background(), first.LeaseID, ""); err != nil {
		t.Fatal(err)
	}
	_, err := m.Get(context.Background(), "openai", "agent-a", use)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Get with the file gone: err = %v, want one wrapping ErrNotExist", err)
	}
}
