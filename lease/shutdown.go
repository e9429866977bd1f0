package lease

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Shutdown stops the scheduler and revokes every held lease at its source, in
// parallel, audited with reason "shutdown". It returns when all are revoked,
// or with an error when ctx runs out first (the leases left are logged) or a
// source failed to revoke. Get returns ErrClosed from the moment it starts.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	held := make([]*lease, 0, len(m.leases))
	grants := make([]Grant, 0, len(m.leases))
	for _, l := range m.leases {
		m.dropLocked(l)
		held = append(held, l)
		grants = append(grants, l.grant())
	}
	m.mu.Unlock()
	defer m.cancel()
	close(m.stop)
	<-m.schedDone

	err := m.revokeAll(ctx, held, grants, reasonShutdown)
	// Acquisitions and renewals in flight see m.closed when they finish and
	// revoke what they got; wait for those too.
	select {
	case <-m.ops.idle():
	case <-ctx.Done():
		if err == nil {
			m.log.Error("lease: shutdown ran out of time waiting for source calls in flight")
			err = fmt.Errorf("lease: shutdown: source calls still in flight: %w", ctx.Err())
		}
	}
	return err
}

// revokeAll revokes held at their sources in parallel, bounded by ctx, and
// audits each with reason.
func (m *Manager) revokeAll(ctx context.Context, held []*lease, grants []Grant, reason string) error {
	type outcome struct {
		id  string
		err error
	}
	done := make(chan outcome, len(held))
	left := make(map[string]bool, len(held))
	for i, l := range held {
		left[l.id] = true
		go func() { done <- outcome{l.id, m.revokeAt(ctx, l, grants[i], reason)} }()
	}
	var errs []error
	for len(left) > 0 {
		select {
		case o := <-done:
			delete(left, o.id)
			if o.err != nil {
				errs = append(errs, fmt.Errorf("lease %s: revoke: %w", o.id, o.err))
			}
		case <-ctx.Done():
			ids := slices.Sorted(maps.Keys(left))
			m.log.Error("lease: ran out of time; leases not revoked", "reason", reason, "lease_ids", ids)
			errs = append(errs, fmt.Errorf("lease: %s: %d lease(s) not revoked: %w", reason, len(ids), ctx.Err()))
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}
