package leasetest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
)

// Env is a lease.Manager on a fake clock over one credential, "api", for a
// source package's tests: its audit trail and debug log are kept for
// assertions and failure messages. It is shut down when the test ends.
type Env struct {
	M     *lease.Manager
	Clock *Clock
	Audit *testutil.SyncBuffer
	Logs  *testutil.SyncBuffer
}

// NewEnv builds the source with the env's clock (set to start; zero: a fixed
// instant) and logger (newSource), and a manager over it named sourceName
// with policy p.
func NewEnv(t testing.TB, start time.Time, sourceName string, p lease.Policy, newSource func(*Clock, *slog.Logger) lease.Source) *Env {
	t.Helper()
	if start.IsZero() {
		start = time.Unix(1_700_000_000, 0)
	}
	e := &Env{Clock: NewClock(start), Audit: &testutil.SyncBuffer{}, Logs: &testutil.SyncBuffer{}}
	log := slog.New(slog.NewJSONHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src := newSource(e.Clock, log)
	e.M = lease.NewManager([]lease.Credential{{Name: "api", SourceName: sourceName, Source: src, Policy: p}},
		lease.Options{Clock: e.Clock, Audit: lease.NewAuditor(e.Audit), Logger: log, Rand: func() float64 { return 0.5 }})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.M.Shutdown(ctx)
	})
	return e
}

// Get gets the credential as identity "agent", failing the test (with the
// audit trail and the log) on an error.
func (e *Env) Get(t testing.TB) lease.Ticket {
	t.Helper()
	tk, err := e.M.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
	if err != nil {
		t.Fatalf("Get: %v\naudit:\n%s\nlogs:\n%s", err, e.Audit.String(), e.Logs.String())
	}
	return tk
}

// Current waits for the manager's current lease (not one rotated out) whose
// id is not notID, and returns it. A failed lease operation ends the wait at
// once; a timeout says what the manager held, audited and logged.
func (e *Env) Current(t testing.TB, notID string) lease.Info {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		infos := e.M.List()
		for _, in := range infos {
			if in.ID != notID && in.State != "retiring" {
				return in
			}
		}
		if strings.Contains(e.Audit.String(), "lease.failed") {
			t.Fatalf("waiting for a lease other than %s, a lease operation failed:\naudit:\n%s\nlogs:\n%s", notID, e.Audit.String(), e.Logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for a current lease other than %s; held %+v\naudit:\n%s\nlogs:\n%s", notID, infos, e.Audit.String(), e.Logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FirstGets sends n Gets at once to a manager holding no lease and returns
// the values they got, failing the test on any error.
func (e *Env) FirstGets(t testing.TB, n int) []string {
	t.Helper()
	var wg sync.WaitGroup
	values := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tk, err := e.M.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
			values[i], errs[i] = tk.Value, err
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent first Get %d of %d: %v", i, n, err)
		}
	}
	return values
}
