package lease

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// run is the manager's one scheduler goroutine. It sleeps on a single timer
// set for the earliest due event of any lease; a Get or a finished source
// call pokes it to look again. It stops when Shutdown closes m.stop.
func (m *Manager) run() {
	defer close(m.schedDone)
	var timer Timer
	var ack chan struct{}
	for {
		next := m.tick()
		if ack != nil {
			close(ack)
			ack = nil
		}
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		if !next.IsZero() {
			timer = m.clock.AfterFunc(next.Sub(m.clock.Now()), m.poke)
		}
		select {
		case <-m.stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case <-m.wake:
		case ack = <-m.syncReq:
		}
	}
}

// poke wakes the scheduler without blocking.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// tick does whatever is due now and returns when next to look (zero: never,
// until poked). A lease with a source call in flight is only expired: the
// call pokes the scheduler when it finishes.
func (m *Manager) tick() time.Time {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.tickTasksLocked(now) // first: a task's leases end as task_expired, not expired
	for _, l := range m.leases {
		switch {
		case !l.busy:
			m.stepLocked(l, now)
		case !now.Before(l.expires):
			m.expireLocked(l) // its source call hangs; the lease ends on time anyway
		}
		switch {
		case l.dropped:
		case l.busy:
			next = earliest(next, l.expires) // not renewAt: that is past, and would spin
		default:
			next = earliest(next, l.due())
		}
	}
	m.sweepScopesLocked(now)
	return next
}

// due is when l next needs the scheduler: expiry, idle timeout or renewal.
func (l *lease) due() time.Time {
	t := l.expires
	if !l.retireAt.IsZero() {
		if l.holds > 0 { // kept until released (hold.go) or expired
			return t
		}
		return earliest(t, l.retireAt)
	}
	if idle := l.cred.Policy.IdleTimeout; idle > 0 && l.holds == 0 {
		t = earliest(t, l.lastUsed.Add(idle))
	}
	if l.cred.Policy.AutoRenew {
		t = earliest(t, l.renewAt())
	}
	return t
}

// stepLocked does what is due for l. Renewal and rotation only happen to a
// lease used within its idle timeout: an idle one is revoked instead.
func (m *Manager) stepLocked(l *lease, now time.Time) {
	switch {
	case !l.retireAt.IsZero() && (l.holds == 0 || now.Before(l.expires)): // rotated out: revoked at retireAt, never later than expiry
		if !now.Before(l.retireAt) && l.holds == 0 {
			m.retireLocked(l, reasonRotated)
		}
	case !now.Before(l.expires):
		m.expireLocked(l)
	case l.idle(now):
		m.retireLocked(l, reasonIdle)
	case l.cred.Policy.AutoRenew && !now.Before(l.renewAt()):
		if l.mustRotate(now) {
			m.startRotateLocked(l)
		} else {
			m.startRenewLocked(l)
		}
	}
}

func (m *Manager) startRenewLocked(l *lease) {
	l.toRenewing()
	g := l.grant()
	m.goOp(func(ctx context.Context) {
		start := m.clock.Now() // the renewed term runs from the request (see acquire)
		ng, err := m.callRenew(ctx, l.cred, g)
		m.finishRenew(l, ng, err, start)
	})
}

// finishRenew applies a renewal's outcome. A TTL shorter than asked marks the
// lease capped, so the next due time rotates it instead of renewing. A
// permanent failure revokes the lease (lease.revoked, reason renew_failed) so
// that the next use acquires a fresh one; other failures retry with backoff
// until the lease expires.
func (m *Manager) finishRenew(l *lease, g Grant, err error, start time.Time) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.poke()
	l.callDone()
	if l.dropped {
		return // revoked while renewing (manual, 401, shutdown)
	}
	if err != nil {
		m.emit(m.leaseEvent(eventFailed, l, "", fmt.Errorf("renew: %w", err)))
		if errors.Is(err, ErrPermanent) {
			m.retireLocked(l, reasonRenewFailed)
			return
		}
		m.retryLocked(l, now)
		return
	}
	l.setGrant(g, start)
	l.toActive()
	m.emit(m.leaseEvent(eventRenewed, l, "", nil))
}

// retryLocked schedules another renewal or rotation attempt. One due after
// expiry never happens: the lease expires first.
func (m *Manager) retryLocked(l *lease, now time.Time) {
	l.toRetrying(now.Add(backoff(l.failures+1, m.rand)))
}

// startRotateLocked acquires l's replacement. Until it arrives Gets keep
// getting l, which is still valid: rotation leaves no gap.
func (m *Manager) startRotateLocked(l *lease) {
	l.toRotating()
	req := Request{Credential: l.cred.Name, Identity: l.key.identity, TTL: l.cred.asked}
	m.goOp(func(ctx context.Context) {
		start := m.clock.Now() // the new term runs from the request (see acquire)
		g, err := m.callAcquire(ctx, l.cred, req)
		m.finishRotate(l, g, err, start)
	})
}

// finishRotate switches the scope to the replacement first, then revokes old
// (reason rotated). The replacement inherits old's last use, so an unused
// credential still idles out on time.
func (m *Manager) finishRotate(old *lease, g Grant, err error, start time.Time) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.poke()
	old.callDone()
	if err != nil {
		m.emit(m.leaseEvent(eventFailed, old, "", fmt.Errorf("rotate: acquire: %w", err)))
		if !old.dropped {
			m.retryLocked(old, now)
		}
		return
	}
	l := newLease(old.cred, old.key, g, start, old.lastIdentity, old.lastUse)
	l.lastUsed = old.lastUsed
	if old.holds > 0 { // held (hold.go): in use right now
		l.lastUsed = now
	}
	installed, _ := m.installLocked(l, old)
	if installed && !old.dropped {
		// A request that got old's value just before the switch may still be
		// presenting it (a database login, a slow upload): revoke old a short
		// grace later, never after its own expiry.
		old.toRetiring(earliest(now.Add(rotateGrace), old.expires))
	}
}

// rotateGrace is how long a rotated-out lease stays valid for requests that
// were already using it.
const rotateGrace = 5 * time.Second

// forgettable reports whether s holds no lease, no backoff that still
// matters (failures are remembered for a full backoff cap after the last
// retry time, so the doubling is not reset) and no 401 window.
func (s *scope) forgettable(now time.Time, window time.Duration) bool {
	return s.cur == nil &&
		(s.failures == 0 || now.Sub(s.retryAt) >= backoffCap) &&
		(s.last401.IsZero() || now.Sub(s.last401) >= window)
}

// sweepScopesLocked forgets scopes that hold nothing worth remembering, so
// that a stream of distinct identities does not grow the map forever.
func (m *Manager) sweepScopesLocked(now time.Time) {
	for key, s := range m.scopes {
		if c := m.entry(key.credential); c == nil || s.forgettable(now, c.window) {
			delete(m.scopes, key)
		}
	}
}
