// Package leasetest holds test doubles for the lease package: Clock, a fake
// clock that tests move by hand, and Source, a counting secret store that
// fails, caps or hangs on demand. Nothing here is for production use.
package leasetest

import (
	"sync"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// Clock is a fake lease.Clock. Time stands still until Advance.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers map[uint64]*timer
}

type timer struct {
	c    *Clock
	id   uint64
	when time.Time
	f    func()
}

// NewClock returns a fake clock set to start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, timers: make(map[uint64]*timer)}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc registers f to run when Advance passes now+d. With d <= 0, f runs
// at once in the caller's goroutine.
func (c *Clock) AfterFunc(d time.Duration, f func()) lease.Timer {
	if d <= 0 {
		f()
		return &timer{c: c}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{c: c, id: c.seq, when: c.now.Add(d), f: f}
	c.timers[t.id] = t
	return t
}

// Stop cancels the timer; it reports whether it was still pending.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t.id]
	delete(t.c.timers, t.id)
	return ok
}

// Advance moves the clock forward by d. Timers that fall due run one by one
// in order of due time (then of creation), synchronously, each with the clock
// set to its due time; then the clock is set to now+d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		t := c.nextDue(target)
		if t == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		delete(c.timers, t.id)
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.mu.Unlock()
		t.f()
	}
}

func (c *Clock) nextDue(target time.Time) *timer {
	var best *timer
	for _, t := range c.timers {
		if t.when.After(target) {
			continue
		}
		if best == nil || t.when.Before(best.when) || (t.when.Equal(best.when) && t.id < best.id) {
			best = t
		}
	}
	return best
}

// Pending is the number of timers not yet fired or stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
