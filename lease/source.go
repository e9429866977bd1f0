package lease

import (
	"context"
	"errors"
	"time"
)

// Request is what the manager asks a Source for.
type Request struct {
	Credential string        // credential name from the config
	Identity   string        // caller identity the lease is scoped to ("" when shared)
	TTL        time.Duration // TTL asked for, already capped at the credential's maxTTL
}

// Grant is one issue of a secret by a Source. Data and Value are secret: they
// must never reach a log, an error, a metric, an audit record or an admin page.
type Grant struct {
	Value string            // the primary value (the configured field, or the only one)
	Data  map[string]string // every field the source returned

	// SourceLeaseID is the store's own lease id ("" when the store has no
	// lease, as for env, file and Vault KV: the manager is then the lessor).
	SourceLeaseID string
	// TTL is the store's TTL for this grant; 0 means the store sets none and
	// the manager's TTL applies. A TTL shorter than asked is a hard cap.
	TTL time.Duration
	// Renewable reports whether Renew can extend the grant at the store.
	Renewable bool
}

// Source hands out, renews and revokes grants for one configured credential.
// Static sources (env, file, Vault KV) re-read the store on Renew so that a
// rotated value is picked up; dynamic ones renew the store's own lease.
type Source interface {
	Acquire(ctx context.Context, req Request) (Grant, error)
	Renew(ctx context.Context, g Grant, ttl time.Duration) (Grant, error)
	Revoke(ctx context.Context, g Grant) error
}

// ErrPermanent marks a renewal that can never succeed (lease not found,
// expired, not renewable): the manager drops the lease and the next use
// acquires a fresh one instead of retrying. Sources wrap it with %w.
var ErrPermanent = errors.New("lease cannot be renewed")

// ErrDenied marks a source refusing by policy (for example a Vault 403): the
// manager does not retry it in a loop. Sources wrap it with %w.
var ErrDenied = errors.New("denied by the secret store")
