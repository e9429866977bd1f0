package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Errors the proxy maps to responses. Errors from Get wrap them with the
// credential's name, never its value; PublicMessage turns one into text fit
// for the agent.
var (
	ErrUnknownCredential = errors.New("unknown credential")
	ErrNotFound          = errors.New("no such lease")
	ErrClosed            = errors.New("lease manager is shut down")
)

// Policy says how long a credential's leases live and when they end.
type Policy struct {
	TTL               time.Duration // asked of the source; 0 means 15m; capped at MaxTTL
	MaxTTL            time.Duration // absolute lifetime of one lease, renewals included; 0 = none
	RenewBeforeExpiry time.Duration // renew or rotate this long before expiry; at most half a term
	IdleTimeout       time.Duration // revoke a lease unused for this long; 0 = never
	AutoRenew         bool          // renew (or rotate) leases in use; otherwise they just expire
	PerIdentity       bool          // one lease per caller identity instead of one shared lease
	PerTask           bool          // one lease per task (task.go); a request needs an open task
}

// Credential is one configured credential and where it comes from.
type Credential struct {
	Name       string
	SourceName string // "env", "file", "vault"…: for audit and metrics
	Source     Source
	Policy     Policy
}

// Options are the manager's collaborators; every field may be left zero.
type Options struct {
	Clock         Clock          // nil = RealClock
	Audit         *Auditor       // nil = no audit trail
	Logger        *slog.Logger   // nil = slog.Default()
	Observer      Observer       // nil = NopObserver
	Rand          func() float64 // jitter in [0, 1); nil = math/rand/v2
	SourceTimeout time.Duration  // bound on one source call; 0 = 30s
	MaxTaskTTL    time.Duration  // cap on a task's TTL; 0 = none (credentials' MaxTTL still cap it)
}

// Use says why a lease is used; it goes to the audit trail. Task names the
// task a request runs in (its X-Credproxy-Task header); only PerTask
// credentials look at it.
type Use struct{ Rule, Purpose, Task string }

// Info describes a held lease for the admin view. It has no value.
type Info struct {
	ID            string `json:"id"`
	SourceLeaseID string `json:"source_lease_id,omitempty"`
	Credential    string `json:"credential"`
	Source        string `json:"source"`
	// Identity is the lease's scope: the caller it belongs to under
	// `scope: identity`, "" for a lease shared by every caller.
	Identity string `json:"identity"`
	// AcquiredBy is the caller whose request acquired the lease (the
	// identity of its lease.created event); LastUsedBy the caller of its
	// latest use, whom its later audit events name.
	AcquiredBy string    `json:"acquired_by"`
	LastUsedBy string    `json:"last_used_by"`
	Issued     time.Time `json:"issued"`
	Expires    time.Time `json:"expires"`
	LastUsed   time.Time `json:"last_used"`
	Renewals   int       `json:"renewals"`
	State      string    `json:"state"`          // active, renewing, rotating or retrying
	Task       string    `json:"task,omitempty"` // the task it belongs to (PerTask credentials)
}

// Manager holds at most one live lease per credential scope. It is safe for
// concurrent use; its one scheduler goroutine runs until Shutdown.
type Manager struct {
	clock   Clock
	audit   *Auditor
	log     *slog.Logger
	obs     Observer
	rand    func() float64 // called with mu held
	timeout time.Duration
	maxTask time.Duration
	creds   map[string]*credEntry
	flights singleflight.Group

	ctx    context.Context // source calls; cancelled when Shutdown returns
	cancel context.CancelFunc
	ops    tracker // source calls in flight

	wake      chan struct{}
	stop      chan struct{}
	syncReq   chan chan struct{}
	schedDone chan struct{}

	mu     sync.Mutex
	closed bool
	scopes map[scopeKey]*scope
	leases map[string]*lease // by id: every lease still held
	active map[string]int    // held leases per credential
	tasks  map[string]*task  // by id: open tasks and those ended within taskMemory
}

// NewManager starts a manager for creds. It panics on a credential with no
// name or source, or a name used twice: the config layer rejects those first.
func NewManager(creds []Credential, opts Options) *Manager {
	m := &Manager{
		clock: opts.Clock, audit: opts.Audit, log: opts.Logger, obs: opts.Observer,
		rand: opts.Rand, timeout: opts.SourceTimeout, maxTask: opts.MaxTaskTTL,
		creds: make(map[string]*credEntry, len(creds)),
		wake:  make(chan struct{}, 1), stop: make(chan struct{}),
		syncReq: make(chan chan struct{}), schedDone: make(chan struct{}),
		scopes: make(map[scopeKey]*scope), leases: make(map[string]*lease),
		active: make(map[string]int), tasks: make(map[string]*task),
	}
	m.setDefaults()
	for _, c := range creds {
		if c.Name == "" || c.Source == nil {
			panic(fmt.Sprintf("lease: credential %q has no name or no source", c.Name))
		}
		if _, dup := m.creds[c.Name]; dup {
			panic(fmt.Sprintf("lease: credential %q configured twice", c.Name))
		}
		m.creds[c.Name] = newCredEntry(c)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	go m.run()
	return m
}

func (m *Manager) setDefaults() {
	if m.clock == nil {
		m.clock = RealClock{}
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.obs == nil {
		m.obs = NopObserver{}
	}
	if m.rand == nil {
		m.rand = rand.Float64
	}
	if m.timeout <= 0 {
		m.timeout = 30 * time.Second
	}
}

// Get returns a ticket for the live lease of credential's scope, acquiring a
// lease if there is none. Concurrent first Gets share one acquisition; after
// a failed one, Gets fail fast with its error until the backoff has passed.
func (m *Manager) Get(ctx context.Context, credential, identity string, u Use) (Ticket, error) {
	c, ok := m.creds[credential]
	if !ok {
		return Ticket{}, &credError{credential: credential, err: ErrUnknownCredential}
	}
	key := c.scopeKey(identity)
	if c.Policy.PerTask {
		t, err := m.taskFor(identity, u.Task)
		if err != nil {
			return Ticket{}, credErr(c, err)
		}
		key.task, u.Task = t.id, t.id
		if t.purpose != "" { // a task's purpose is its leases' (and their failures')
			u.Purpose = t.purpose
		}
	}
	for range 3 {
		if t, ok, err := m.cached(c, key, identity, u); ok || err != nil {
			return t, err
		}
		l, err := m.acquireShared(ctx, c, key, identity, u)
		if err != nil {
			return Ticket{}, err
		}
		if t, ok := m.useNew(l, identity, u); ok {
			return t, nil
		}
		// Revoked between acquisition and use (a 401, an admin): go again.
	}
	return Ticket{}, credErr(c, errRevokedWhileAcquiring)
}

var errRevokedWhileAcquiring = errors.New("lease revoked while being acquired")

// cached returns a ticket for the scope's live lease, or the backoff error.
func (m *Manager) cached(c *credEntry, key scopeKey, identity string, u Use) (Ticket, bool, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Ticket{}, false, credErr(c, ErrClosed)
	}
	s := m.scopeLocked(key)
	if s.cur != nil && m.liveLocked(s.cur, now) {
		return s.cur.use(now, identity, u), true, nil
	}
	if now.Before(s.retryAt) {
		return Ticket{}, false, backoffErr(c, s, now)
	}
	return Ticket{}, false, nil
}

func backoffErr(c *credEntry, s *scope, now time.Time) error {
	return credErr(c, fmt.Errorf("acquire: backing off for %s after: %w",
		s.retryAt.Sub(now).Round(time.Millisecond), s.lastErr))
}

func (m *Manager) useNew(l *lease, identity string, u Use) (Ticket, bool) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.dropped {
		return Ticket{}, false
	}
	return l.use(now, identity, u), true
}

// liveLocked reports whether l may still be handed out. A lease past its
// expiry or idle timeout that the scheduler has not reached yet is ended
// here: a late scheduler must not stretch a credential's exposure.
func (m *Manager) liveLocked(l *lease, now time.Time) bool {
	switch {
	case !now.Before(l.expires):
		m.expireLocked(l)
		return false
	case l.idle(now):
		m.retireLocked(l, reasonIdle)
		return false
	}
	return true
}

func (m *Manager) scopeLocked(key scopeKey) *scope {
	s, ok := m.scopes[key]
	if !ok {
		s = &scope{}
		m.scopes[key] = s
	}
	return s
}

// acquireShared runs one acquisition per scope however many Gets wait on it.
// The acquisition does not use the caller's ctx: one caller giving up must
// not fail the others. It runs on the manager's context instead.
func (m *Manager) acquireShared(ctx context.Context, c *credEntry, key scopeKey, identity string, u Use) (*lease, error) {
	ch := m.flights.DoChan(key.String(), func() (any, error) {
		return m.acquire(c, key, identity, u)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*lease), nil
	case <-ctx.Done():
		return nil, credErr(c, fmt.Errorf("acquire: %w", ctx.Err()))
	}
}

// acquire gets a new grant from the source and installs it as the scope's
// lease, unless another acquisition won the race or the manager is closed.
func (m *Manager) acquire(c *credEntry, key scopeKey, identity string, u Use) (*lease, error) {
	now := m.clock.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, credErr(c, ErrClosed)
	}
	s := m.scopeLocked(key)
	if s.cur != nil && m.liveLocked(s.cur, now) {
		m.mu.Unlock()
		return s.cur, nil
	}
	if now.Before(s.retryAt) {
		err := backoffErr(c, s, now)
		m.mu.Unlock()
		return nil, err
	}
	if _, err := m.taskOfLocked(key, now); err != nil {
		m.mu.Unlock()
		return nil, credErr(c, err)
	}
	m.ops.add()
	m.mu.Unlock()
	defer m.ops.done()

	ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
	defer cancel()
	// The store's TTL runs from before its answer reached us: count the term
	// from the request, so that a slow call never makes our expiry later
	// than the store's (and a dead credential is never handed out).
	start := m.clock.Now()
	g, err := m.callAcquire(ctx, c, Request{Credential: c.Name, Identity: key.identity, TTL: c.asked})
	now = m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.acquireFailedLocked(c, key, identity, u, now, err)
		return nil, credErr(c, fmt.Errorf("acquire: %w", err))
	}
	m.scopeLocked(key).failures = 0
	m.scopeLocked(key).retryAt = time.Time{}
	l := newLease(c, key, g, start, identity, u)
	if _, err := m.installLocked(l, nil); err != nil {
		return nil, err
	}
	return l, nil
}

// acquireFailedLocked starts (or extends) the scope's backoff and audits the
// failure. ErrDenied backs off too: a refusal is not retried in a loop.
func (m *Manager) acquireFailedLocked(c *credEntry, key scopeKey, identity string, u Use, now time.Time, err error) {
	s := m.scopeLocked(key)
	s.failures++
	s.retryAt = now.Add(backoff(s.failures, m.rand))
	s.lastErr = err
	m.emit(auditEvent{
		Time: now.UTC(), Event: eventFailed, Credential: c.Name, Source: c.SourceName,
		Identity: identity, TTL: c.asked.Seconds(), Purpose: u.Purpose, Rule: u.Rule, Task: u.Task,
		Error: "acquire: " + err.Error(),
	})
}

// Unauthorized tells the manager that the upstream answered 401 to a request
// that carried t. The lease is revoked and the next Get acquires a fresh one,
// but at most once per scope per RenewBeforeExpiry window: a credential the
// upstream rejects outright must not make the manager churn the store.
func (m *Manager) Unauthorized(t Ticket, u Use) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases[t.LeaseID]
	if !ok || m.scopeLocked(l.key).cur != l {
		m.log.Debug("lease: 401 for a lease no longer current", "lease_id", t.LeaseID, "credential", t.Credential)
		return
	}
	s := m.scopeLocked(l.key)
	if !s.last401.IsZero() && now.Sub(s.last401) < l.cred.window {
		m.log.Warn("lease: upstream 401 again within the window; keeping the lease",
			"lease_id", l.id, "credential", l.cred.Name, "rule", u.Rule, "window", l.cred.window)
		return
	}
	s.last401 = now
	l.lastIdentity, l.lastUse = t.Identity, u
	m.retireLocked(l, reasonUpstream401)
}

// Revoke ends lease id now, at the source too, and audits reason ("manual"
// when empty). The lease is dropped even if the source fails to revoke it;
// that error is returned.
func (m *Manager) Revoke(ctx context.Context, id string, reason string) error {
	if reason == "" {
		reason = reasonManual
	}
	m.mu.Lock()
	l, ok := m.leases[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("lease %q: %w", id, ErrNotFound)
	}
	m.dropLocked(l)
	g := l.grant()
	m.mu.Unlock()
	ctx, cancel := m.revokeContext(ctx)
	defer cancel()
	if err := m.revokeAt(ctx, l, g, reason); err != nil {
		return fmt.Errorf("lease %s: revoke at source %q: %w", id, l.cred.SourceName, err)
	}
	return nil
}
