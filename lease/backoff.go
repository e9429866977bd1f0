package lease

import "time"

const (
	backoffBase   = 250 * time.Millisecond
	backoffCap    = 30 * time.Second
	backoffJitter = 0.2 // ±20%
)

// backoff is how long to wait after the n-th failure in a row (n >= 1):
// 250ms doubling up to 30s. The jitter keeps many credproxy instances from
// retrying a recovering secret store in lockstep. rnd returns [0, 1).
func backoff(n int, rnd func() float64) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffCap; i++ {
		d *= 2
	}
	d = min(d, backoffCap)
	f := 1 + backoffJitter*(2*rnd()-1)
	return time.Duration(float64(d) * f)
}

// earliest returns the earlier of a and b, treating the zero time as "none".
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
