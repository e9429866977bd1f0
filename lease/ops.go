package lease

import (
	"context"
	"errors"
	"sync"
)

// tracker counts source calls in flight so that Shutdown can wait for them.
type tracker struct {
	mu     sync.Mutex
	n      int
	total  int           // ever started, for tests
	idleCh chan struct{} // closed while n == 0
}

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.idleCh = make(chan struct{})
	}
	t.n++
	t.total++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.idleCh)
	}
}

// idle returns a channel that is closed once no call is in flight.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.idleCh
}

// goOp runs f, a call to the source, in its own goroutine. Source calls do not
// run on the scheduler goroutine, so one slow store cannot delay the expiry
// or idle revocation of another credential's leases.
func (m *Manager) goOp(f func(ctx context.Context)) {
	m.ops.add()
	go func() {
		defer m.ops.done()
		ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
		defer cancel()
		f(ctx)
	}()
}

var errEmptyGrant = errors.New("source returned no value")

func (m *Manager) callAcquire(ctx context.Context, c *credEntry, req Request) (Grant, error) {
	start := m.clock.Now()
	g, err := c.Source.Acquire(ctx, req)
	if err == nil && g.Value == "" && len(g.Data) == 0 {
		err = errEmptyGrant
	}
	err = m.scrubSourceErr(err, Grant{})
	m.obs.SourceOp(c.SourceName, "acquire", m.clock.Now().Sub(start), err)
	m.obs.LeaseOp(c.Name, "acquire", result(err))
	return g, err
}

func (m *Manager) callRenew(ctx context.Context, c *credEntry, g Grant) (Grant, error) {
	start := m.clock.Now()
	ng, err := c.Source.Renew(ctx, g, c.asked)
	err = m.scrubSourceErr(err, g)
	m.obs.SourceOp(c.SourceName, "renew", m.clock.Now().Sub(start), err)
	m.obs.LeaseOp(c.Name, "renew", result(err))
	return ng, err
}

func (m *Manager) callRevoke(ctx context.Context, c *credEntry, g Grant) error {
	start := m.clock.Now()
	err := m.scrubSourceErr(c.Source.Revoke(ctx, g), g)
	m.obs.SourceOp(c.SourceName, "revoke", m.clock.Now().Sub(start), err)
	m.obs.LeaseOp(c.Name, "revoke", result(err))
	return err
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// installLocked registers a freshly acquired lease and makes it the scope's
// current one if the scope is empty or still holds old. Otherwise (closed,
// or another lease got there first) the new lease is revoked unused.
func (m *Manager) installLocked(l, old *lease) (bool, error) {
	t, taskErr := m.taskOfLocked(l.key, m.clock.Now())
	l.task = t
	if t == nil && l.key.task != "" {
		l.task = &task{id: l.key.task, state: TaskEnded} // forgotten: still audit its id
	}
	m.leases[l.id] = l
	m.active[l.cred.Name]++
	m.obs.LeasesActive(l.cred.Name, m.active[l.cred.Name])
	m.emit(m.leaseEvent(eventCreated, l, "", nil))
	s := m.scopeLocked(l.key)
	switch {
	case m.closed:
		m.retireLocked(l, reasonShutdown)
		return false, credErr(l.cred, ErrClosed)
	case m.entry(l.cred.Name) != l.cred:
		// Acquired from a definition a reload removed or replaced while
		// the source call was in flight: never hand it out.
		m.retireLocked(l, reasonConfigChanged)
		return false, nil
	case taskErr != nil: // the task ended while the source was asked
		m.retireLocked(l, reasonTaskEnd)
		return false, credErr(l.cred, taskErr)
	case s.cur == nil || s.cur == old:
		s.cur = l
		m.poke()
		return true, nil
	default:
		m.retireLocked(l, reasonRotated) // superseded before anyone used it
		return false, nil
	}
}

// dropLocked stops l from being handed out. Its value stays until the source
// has been told to revoke it (some stores need the value to revoke).
func (m *Manager) dropLocked(l *lease) {
	if l.dropped {
		return
	}
	l.dropped = true
	l.endHolds()
	delete(m.leases, l.id)
	if s := m.scopes[l.key]; s != nil && s.cur == l {
		s.cur = nil
	}
	m.active[l.cred.Name]--
	m.obs.LeasesActive(l.cred.Name, m.active[l.cred.Name])
}

// retireLocked drops l and revokes it at the source in the background; the
// lease.revoked event is written once the source has answered.
func (m *Manager) retireLocked(l *lease, reason string) {
	m.dropLocked(l)
	g := l.grant()
	m.goOp(func(ctx context.Context) { _ = m.revokeAt(ctx, l, g, reason) })
}

// expireLocked drops l at its expiry. The source is still told to revoke it:
// a store that set no TTL of its own would otherwise keep it alive forever.
func (m *Manager) expireLocked(l *lease) {
	m.dropLocked(l)
	m.emit(m.leaseEvent(eventExpired, l, "", nil))
	m.obs.LeaseOp(l.cred.Name, "expire", "ok")
	g := l.grant()
	m.goOp(func(ctx context.Context) {
		if err := m.callRevoke(ctx, l.cred, g); err != nil {
			m.log.Debug("lease: revoke of expired lease failed", "lease_id", l.id, "error", err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		l.wipe()
	})
}

// revokeAt revokes dropped lease l at its source, audits it and zeroes the
// manager's copy of the value.
func (m *Manager) revokeAt(ctx context.Context, l *lease, g Grant, reason string) error {
	err := m.callRevoke(ctx, l.cred, g)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.emit(m.leaseEvent(eventRevoked, l, reason, err))
	l.wipe()
	return err
}
