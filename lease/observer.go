package lease

import "time"

// Observer is told about lease activity; the metrics package implements it.
// Arguments are credential and source names and fixed enums only, never
// values. Implementations must be cheap and safe for concurrent use.
type Observer interface {
	// LeaseOp counts one operation: op is acquire, renew, revoke or expire;
	// result is ok or error.
	LeaseOp(credential, op, result string)
	// LeasesActive reports how many live leases a credential now has.
	LeasesActive(credential string, n int)
	// SourceOp times one call to a Source: op is acquire, renew or revoke.
	SourceOp(source, op string, d time.Duration, err error)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) LeaseOp(string, string, string)                {}
func (NopObserver) LeasesActive(string, int)                      {}
func (NopObserver) SourceOp(string, string, time.Duration, error) {}
