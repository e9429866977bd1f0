package lease

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	mid := func() float64 { return 0.5 }
	for n, want := range map[int]time.Duration{
		1: 250 * time.Millisecond, 2: 500 * time.Millisecond, 3: time.Second,
		8: 30 * time.Second, 9: 30 * time.Second, 1000: 30 * time.Second,
	} {
		if got := backoff(n, mid); got != want {
			t.Errorf("backoff(%d) without jitter = %v, want %v", n, got, want)
		}
	}
	low, high := backoff(3, func() float64 { return 0 }), backoff(3, func() float64 { return 0.999999 })
	if low != 800*time.Millisecond || high < 1199*time.Millisecond || high > 1200*time.Millisecond {
		t.Errorf("backoff(3) jitter spans %v..%v, want 800ms..1.2s (±20%%)", low, high)
	}
}

func TestLeadClampedToHalfTerm(t *testing.T) {
	for _, c := range []struct{ before, term, want time.Duration }{
		{2 * time.Minute, 10 * time.Minute, 2 * time.Minute},
		{2 * time.Minute, time.Minute, 30 * time.Second}, // a store capping below renewBefore
		{0, 10 * time.Minute, 5 * time.Minute},
	} {
		if got := lead(c.before, c.term); got != c.want {
			t.Errorf("lead(%v, %v) = %v, want %v", c.before, c.term, got, c.want)
		}
	}
}
