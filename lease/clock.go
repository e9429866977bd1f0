package lease

import "time"

// Clock is where the manager reads the time and sets its one timer. It is an
// interface so that tests move time by hand (leasetest.Clock) instead of
// sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has elapsed, as time.AfterFunc does. The
	// manager's f only signals its scheduler, so it never blocks.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call if it has not happened yet and reports whether
	// it did so.
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
