package lease

import (
	"context"
	"sync"
)

// Audit events of held leases: one long-lived use (a database connection)
// opened and closed. Their rule field is the holder's Use.Rule (for a
// database listener, the database's name).
const (
	eventHoldOpened = "connection.opened"
	eventHoldClosed = "connection.closed"
)

// Hold is one long-lived use of a lease, such as a database connection that
// logged in with it. While any Hold on a lease is open the lease is in use:
// it is never revoked as idle, it is renewed (or rotated) when due, and once
// rotated out it stays valid until its last Hold is released or it expires.
// Its idle timeout starts when the last Hold is released.
type Hold struct {
	m        *Manager
	l        *lease
	ended    <-chan struct{}
	identity string
	use      Use
	once     sync.Once
}

// GetHeld is Get plus a Hold on the ticket's lease. Release the Hold when the
// use ends; stop using the ticket when Ended is closed.
func (m *Manager) GetHeld(ctx context.Context, credential, identity string, u Use) (Ticket, *Hold, error) {
	for range 3 {
		t, err := m.Get(ctx, credential, identity, u)
		if err != nil {
			return Ticket{}, nil, err
		}
		if h := m.hold(t, u); h != nil {
			return t, h, nil
		}
		// Dropped between Get and the hold (expired, revoked): go again.
	}
	if c := m.entry(credential); c != nil {
		return Ticket{}, nil, credErr(c, errRevokedWhileAcquiring)
	}
	return Ticket{}, nil, &credError{credential: credential, err: ErrUnknownCredential}
}

func (m *Manager) hold(t Ticket, u Use) *Hold {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases[t.LeaseID]
	if !ok || l.dropped {
		return nil
	}
	l.holds++
	if l.ended == nil {
		l.ended = make(chan struct{})
	}
	h := &Hold{m: m, l: l, ended: l.ended, identity: t.Identity, use: u}
	m.emit(h.event(eventHoldOpened))
	return h
}

// Ended is closed when the held lease ends anyway: it expired (its hard
// deadline passed), it was revoked (by an admin, after an upstream refusal,
// or at shutdown). The value is dead then; the holder must stop using it.
func (h *Hold) Ended() <-chan struct{} { return h.ended }

// Release ends the hold. The lease's idle timeout runs from the release of
// its last hold. Release is idempotent.
func (h *Hold) Release() {
	h.once.Do(func() {
		m, l := h.m, h.l
		now := m.clock.Now()
		m.mu.Lock()
		defer m.mu.Unlock()
		l.holds--
		if l.holds == 0 && !l.dropped {
			if now.After(l.lastUsed) {
				l.lastUsed = now
			}
			m.poke() // a rotated-out lease is retired now; an idle timer starts
		}
		m.emit(h.event(eventHoldClosed))
	})
}

func (h *Hold) event(name string) auditEvent {
	e := h.m.leaseEvent(name, h.l, "", nil)
	e.Identity, e.Purpose, e.Rule = h.identity, h.use.Purpose, h.use.Rule
	return e
}

// endHolds tells l's holders that it is gone; dropLocked calls it once.
func (l *lease) endHolds() {
	if l.ended != nil {
		close(l.ended)
	}
}
