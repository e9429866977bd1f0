// Package static holds lease sources for secrets that have no lease at their
// store: an environment variable (Env) and a file (File). The lease manager is
// the lessor for them; Renew re-reads the store so that a rotated value is
// picked up, and Revoke only lets the manager zero its copy.
package static

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// Env reads a credential from the environment variable Var.
type Env struct{ Var string }

var _ lease.Source = Env{}

// Acquire reads the variable. A missing or empty one is an error that names
// the variable, never a value.
func (e Env) Acquire(context.Context, lease.Request) (lease.Grant, error) {
	v := os.Getenv(e.Var)
	if v == "" {
		return lease.Grant{}, fmt.Errorf("env %s: not set or empty", e.Var)
	}
	return grant(v), nil
}

// Renew re-reads the variable.
func (e Env) Renew(ctx context.Context, _ lease.Grant, _ time.Duration) (lease.Grant, error) {
	return e.Acquire(ctx, lease.Request{})
}

// Revoke does nothing: the environment has no lease to end.
func (Env) Revoke(context.Context, lease.Grant) error { return nil }

// File reads a credential from the file at Path, without its trailing newline.
type File struct{ Path string }

var _ lease.Source = File{}

// Acquire reads the file. Errors name the path, never the content.
func (f File) Acquire(context.Context, lease.Request) (lease.Grant, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, once
		}
		return lease.Grant{}, fmt.Errorf("file %s: %w", f.Path, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	clear(b)
	if v == "" {
		return lease.Grant{}, fmt.Errorf("file %s: empty", f.Path)
	}
	return grant(v), nil
}

// Renew re-reads the file, so a rotated key is picked up.
func (f File) Renew(ctx context.Context, _ lease.Grant, _ time.Duration) (lease.Grant, error) {
	return f.Acquire(ctx, lease.Request{})
}

// Revoke does nothing: the file has no lease to end.
func (File) Revoke(context.Context, lease.Grant) error { return nil }

// grant is a grant with no store lease: TTL 0 lets the manager's TTL apply.
func grant(v string) lease.Grant {
	return lease.Grant{Value: v, Data: map[string]string{"value": v}, Renewable: true}
}
