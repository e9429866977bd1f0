package lease

import "time"

// The life of a held lease. Every state change of a lease is made by one of
// the methods in this file, called with Manager.mu held; Info.State shows
// the state. A lease is born active (acquired by Get, by a task's begin, or
// as a rotation's replacement), and then:
//
//	from       event                                             to         by
//	active     renewAt, used within idleTimeout, AutoRenew:
//	             renewable, uncapped, within MaxTTL              renewing   toRenewing
//	             otherwise                                       rotating   toRotating
//	renewing   the store renewed it                              active     toActive
//	renewing   the store failed, transiently                     retrying   toRetrying
//	renewing   the store failed with ErrPermanent                revoked (renew_failed)
//	rotating   the replacement arrived and took over             retiring   toRetiring
//	rotating   the store failed                                  retrying   toRetrying
//	retrying   retryAt                                           renewing or rotating, as from active
//	retiring   retireAt (rotateGrace, or expiry if sooner)       revoked (rotated)
//	           and no Hold left (hold.go: a database connection
//	           keeps it until it closes, or until expiry)
//
// From any state a lease leaves the manager, never to return (dropLocked:
// no Get hands it out again), at:
//   - its expiry (lease.expired);
//   - idleTimeout without use, counted from the release of its last Hold
//     (lease.revoked, reason idle);
//   - a reload that removed or changed its credential (config_changed);
//   - an upstream 401 (upstream_401), the admin (manual), Shutdown
//     (shutdown);
//   - its task's end (task_end), the task's TTL (task_expired), or the
//     failed begin of its task (task_aborted).
//
// While renewing or rotating a lease is busy (a source call is in flight):
// the scheduler only expires it until callDone. Tasks have a simpler life
// of their own: open, then ended (EndTask) or expired (its TTL); task.go.
const (
	stateActive   = "active"
	stateRenewing = "renewing"
	stateRotating = "rotating"
	stateRetiring = "retiring" // rotated out: still valid for requests in flight until retireAt
	stateRetrying = "retrying" // a renewal or rotation failed; retrying with backoff
)

// toRenewing: a renewal at the source is in flight.
func (l *lease) toRenewing() { l.busy, l.state = true, stateRenewing }

// toRotating: the replacement's acquisition is in flight.
func (l *lease) toRotating() { l.busy, l.state = true, stateRotating }

// callDone: the renewal or rotation call has returned; its outcome moves
// the state next.
func (l *lease) callDone() { l.busy = false }

// toActive: a renewal succeeded.
func (l *lease) toActive() {
	l.renewals++
	l.failures, l.retryAt, l.state = 0, time.Time{}, stateActive
}

// toRetrying: a renewal or rotation failed; the next attempt is at retryAt.
func (l *lease) toRetrying(retryAt time.Time) {
	l.failures++
	l.retryAt, l.state = retryAt, stateRetrying
}

// toRetiring: a replacement took over; l stays valid, for requests already
// presenting it, until retireAt.
func (l *lease) toRetiring(retireAt time.Time) { l.retireAt, l.state = retireAt, stateRetiring }
