package leasetest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// Source is a test double for lease.Source. It hands out sk-test-1,
// sk-test-2… with store lease ids src-1, src-2…, grants the TTL asked (or its
// cap), counts calls, records them in order, and fails, holds or hangs on
// demand. It is safe for concurrent use.
type Source struct {
	mu           sync.Mutex
	n            int
	cap          time.Duration
	notRenewable bool
	acquireErr   error
	renewErr     error
	revokeErr    error
	hold         chan struct{}
	holdRenew    chan struct{}
	hangRevoke   bool
	acquires     int
	renews       int
	revokes      int
	calls        []string
}

// NewSource returns a test source whose grants are renewable and uncapped.
func NewSource() *Source { return &Source{} }

var _ lease.Source = (*Source)(nil)

// Acquire returns the next sk-test-N value, unless told to fail or hold.
func (s *Source) Acquire(ctx context.Context, req lease.Request) (lease.Grant, error) {
	s.mu.Lock()
	s.acquires++
	hold := s.hold
	s.mu.Unlock()
	if err := wait(ctx, hold); err != nil {
		return lease.Grant{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acquireErr != nil {
		s.calls = append(s.calls, "acquire error")
		return lease.Grant{}, s.acquireErr
	}
	s.n++
	v := fmt.Sprintf("sk-test-%d", s.n)
	s.calls = append(s.calls, "acquire "+v)
	return lease.Grant{
		Value:         v,
		Data:          map[string]string{"value": v, "username": fmt.Sprintf("user-%d", s.n)},
		SourceLeaseID: fmt.Sprintf("src-%d", s.n),
		TTL:           s.ttl(req.TTL),
		Renewable:     !s.notRenewable,
	}, nil
}

// Renew extends g to the TTL asked (or the cap), unless told to fail or hold.
func (s *Source) Renew(ctx context.Context, g lease.Grant, ttl time.Duration) (lease.Grant, error) {
	s.mu.Lock()
	s.renews++
	s.calls = append(s.calls, "renew "+g.Value)
	hold := s.holdRenew
	s.mu.Unlock()
	if err := wait(ctx, hold); err != nil {
		return lease.Grant{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.renewErr != nil {
		return lease.Grant{}, s.renewErr
	}
	g.TTL = s.ttl(ttl)
	return g, nil
}

// Revoke records the revocation; it hangs until ctx ends after HangRevoke.
func (s *Source) Revoke(ctx context.Context, g lease.Grant) error {
	s.mu.Lock()
	s.revokes++
	s.calls = append(s.calls, "revoke "+g.Value)
	hang, err := s.hangRevoke, s.revokeErr
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (s *Source) ttl(asked time.Duration) time.Duration {
	if s.cap > 0 && asked > s.cap {
		return s.cap
	}
	return asked
}

// FailAcquire makes Acquire return err (nil: succeed again).
func (s *Source) FailAcquire(err error) { s.set(func() { s.acquireErr = err }) }

// FailRenew makes Renew return err (nil: succeed again).
func (s *Source) FailRenew(err error) { s.set(func() { s.renewErr = err }) }

// FailRevoke makes Revoke return err (nil: succeed again).
func (s *Source) FailRevoke(err error) { s.set(func() { s.revokeErr = err }) }

// SetCap makes the store grant at most d from now on (0: no cap).
func (s *Source) SetCap(d time.Duration) { s.set(func() { s.cap = d }) }

// SetRenewable sets whether new grants are renewable.
func (s *Source) SetRenewable(ok bool) { s.set(func() { s.notRenewable = !ok }) }

// HangRevoke makes every later Revoke block until its context ends.
func (s *Source) HangRevoke() { s.set(func() { s.hangRevoke = true }) }

// HoldAcquire makes later Acquires block until release is called.
func (s *Source) HoldAcquire() (release func()) { return s.holdOn(&s.hold) }

// HoldRenew makes later Renews block until release is called.
func (s *Source) HoldRenew() (release func()) { return s.holdOn(&s.holdRenew) }

func (s *Source) holdOn(gate *chan struct{}) (release func()) {
	ch := make(chan struct{})
	s.set(func() { *gate = ch })
	var once sync.Once
	return func() {
		once.Do(func() {
			s.set(func() { *gate = nil })
			close(ch)
		})
	}
}

func (s *Source) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// Acquires counts Acquire calls, failed and held ones included.
func (s *Source) Acquires() int { return s.count(&s.acquires) }

// Renews counts Renew calls.
func (s *Source) Renews() int { return s.count(&s.renews) }

// Revokes counts Revoke calls.
func (s *Source) Revokes() int { return s.count(&s.revokes) }

func (s *Source) count(n *int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *n
}

// Calls lists the calls so far in order: "acquire sk-test-1", "renew
// sk-test-1", "revoke sk-test-1", "acquire error".
func (s *Source) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// wait blocks until hold is closed (at once when nil) or ctx ends.
func wait(ctx context.Context, hold chan struct{}) error {
	if hold == nil {
		return nil
	}
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
