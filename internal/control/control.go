// Package control is credproxy's control API as plain Go: tasks, leases,
// credentials, rule explanations and reload. The admin server's HTTP routes
// and the MCP server both call it, so both see the same behaviour and the
// same errors. It never returns a credential value: only names, ids, hosts
// and times. It does not speak HTTP (internal/admin does).
package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/rules"
)

// Errors a caller maps to its own answers (the admin server to statuses).
// Errors from the lease manager keep their own sentinels (lease.ErrNotFound,
// lease.ErrUnknownTask…) in the chain.
var (
	// ErrInvalid marks input the caller must fix (a bad TTL, an unknown
	// credential name, a URL that does not parse).
	ErrInvalid = errors.New("invalid input")
	// ErrNoReload is returned by Reload when no reload hook is wired.
	ErrNoReload = errors.New("reload is not available")
)

// Options are the control API's collaborators.
type Options struct {
	Leases *lease.Manager
	// Config returns the config in force (a reload swaps it); nil leaves
	// ListCredentials and Explain empty.
	Config func() *rules.Config
	// Reload re-reads the config and applies it; nil: Reload returns
	// ErrNoReload.
	Reload func() error
}

// Control is the control API. It is safe for concurrent use.
type Control struct {
	leases *lease.Manager
	config func() *rules.Config
	reload func() error
}

// New returns the control API over o.
func New(o Options) *Control {
	return &Control{leases: o.Leases, config: o.Config, reload: o.Reload}
}

// ListLeases describes every held lease (never a value).
func (c *Control) ListLeases() []lease.Info { return c.leases.List() }

// RevokeLease revokes lease id now, audited with reason "manual". An
// unknown id wraps lease.ErrNotFound; any other error is the store's failure
// to revoke (the lease is dropped by credproxy anyway).
func (c *Control) RevokeLease(ctx context.Context, id string) error {
	return c.leases.Revoke(ctx, id, "")
}

// Reload re-reads the config through the wired hook.
func (c *Control) Reload() error {
	if c.reload == nil {
		return ErrNoReload
	}
	if err := c.reload(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}
