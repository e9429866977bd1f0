package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/lease"
)

// source is one credential's path in one Vault. Whether it is static (KV v1
// or v2: no Vault lease, the manager is the lessor and Renew re-reads) or
// dynamic (a Vault lease to renew and revoke) is decided by each response.
type source struct {
	c     *Client
	path  string
	field string
}

// Acquire reads the path. For a dynamic secret this creates a new Vault
// lease (for database/creds/x: a new database user) whose TTL is the role's
// default, since Vault takes no TTL on a read. A TTL longer than req.TTL is
// brought down at once (see shorten): if credproxy crashed, the store must
// not keep the credential alive for a day when the config said 15 minutes.
func (s *source) Acquire(ctx context.Context, req lease.Request) (lease.Grant, error) {
	g, err := s.read(ctx)
	if err != nil || g.SourceLeaseID == "" || req.TTL <= 0 || g.TTL <= req.TTL {
		return g, err
	}
	return s.shorten(ctx, g, req.TTL)
}

// shorten renews the new lease g with increment ttl, which Vault honours
// below the current TTL (the database engine does; so do most engines that
// use the framework's LeaseExtend), and returns the grant with the TTL Vault
// now reports. If the renewal fails, g is revoked and the acquisition fails:
// an error must lead to less exposure, not to a lease nobody tracks. A
// lease Vault marks non-renewable cannot be shortened; it is kept, with a
// warning to lower the role's TTL, and the manager revokes it at its ttl.
func (s *source) shorten(ctx context.Context, g lease.Grant, ttl time.Duration) (lease.Grant, error) {
	if !g.Renewable {
		s.c.log.Warn("vault lease outlives the credential's ttl and is not renewable, so it cannot be shortened; lower the role's TTL",
			"path", s.path, "vault_ttl", g.TTL, "ttl", ttl)
		return g, nil
	}
	ng, err := s.Renew(ctx, g, ttl)
	if err != nil {
		// The caller's ctx may be what failed: revoke on a fresh budget.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeBudget)
		defer cancel()
		outcome := "lease revoked"
		if rerr := s.revoke(rctx, g.SourceLeaseID); rerr != nil {
			outcome = "revoking it failed too"
			s.c.log.Warn("vault: revoking a lease that could not be shortened failed", "path", s.path, "err", rerr)
		}
		return lease.Grant{}, fmt.Errorf("vault: %s: bringing the new lease down to ttl %s failed, %s: %w", s.path, ttl, outcome, err)
	}
	if ng.TTL > time.Duration(seconds(ttl))*time.Second {
		s.c.log.Warn("vault kept the lease's TTL above the credential's ttl; lower the role's TTL",
			"path", s.path, "vault_ttl", ng.TTL, "ttl", ttl)
	}
	return ng, nil
}

// revokeBudget bounds the revocation of a lease that failed to be shortened.
const revokeBudget = 10 * time.Second

// Renew re-reads a static secret, so a value changed in Vault is picked up,
// and renews a dynamic one's Vault lease by ttl. The TTL returned is Vault's:
// shorter than ttl means the role's max_ttl caps it.
func (s *source) Renew(ctx context.Context, g lease.Grant, ttl time.Duration) (lease.Grant, error) {
	if g.SourceLeaseID == "" {
		return s.read(ctx)
	}
	var sec *api.Secret
	err := s.c.call(ctx, func() (err error) {
		sec, err = s.c.api.Sys().RenewWithContext(ctx, g.SourceLeaseID, seconds(ttl))
		return err
	})
	if err != nil {
		return lease.Grant{}, s.c.wrap("renew", s.path, err)
	}
	if sec == nil {
		return lease.Grant{}, fmt.Errorf("vault: renew %s: empty response", s.path)
	}
	out := g
	out.TTL = time.Duration(sec.LeaseDuration) * time.Second
	out.Renewable = sec.Renewable
	if out.TTL < ttl || capWarning(sec.Warnings) {
		s.c.log.Debug("vault capped the lease TTL", "path", s.path, "asked", ttl, "got", out.TTL)
	}
	return out, nil
}

// Revoke revokes a dynamic secret's lease and waits until Vault has done it
// (sync), so a database user is gone when Revoke returns. Revoking a lease
// Vault no longer knows succeeds. Static secrets have nothing to revoke.
func (s *source) Revoke(ctx context.Context, g lease.Grant) error {
	if g.SourceLeaseID == "" {
		return nil
	}
	return s.revoke(ctx, g.SourceLeaseID)
}

func (s *source) revoke(ctx context.Context, leaseID string) error {
	err := s.c.call(ctx, func() error {
		return s.c.api.Sys().RevokeWithOptionsWithContext(ctx,
			&api.RevokeOptions{LeaseID: leaseID, Sync: true})
	})
	return s.c.wrap("revoke", s.path, err)
}

func (s *source) read(ctx context.Context) (lease.Grant, error) {
	var sec *api.Secret
	err := s.c.call(ctx, func() (err error) {
		sec, err = s.c.api.Logical().ReadWithContext(ctx, s.path)
		return err
	})
	if err != nil {
		return lease.Grant{}, s.c.wrap("read", s.path, err)
	}
	g, err := grantFrom(s.path, s.field, sec)
	err = s.c.scrubErr(err) // Vault's warnings are quoted in some of these
	if err != nil && sec != nil && sec.LeaseID != "" {
		// Unusable (say, a wrong field): don't leave a database user behind.
		if rerr := s.revoke(ctx, sec.LeaseID); rerr != nil {
			s.c.log.Warn("vault: revoking an unusable lease failed", "path", s.path, "err", rerr)
		}
	}
	return g, err
}

// grantFrom turns a read response into a Grant. Errors name the path and the
// fields, never a value.
func grantFrom(path, field string, sec *api.Secret) (lease.Grant, error) {
	data, err := secretData(path, sec)
	if err != nil {
		return lease.Grant{}, err
	}
	value, err := pick(path, field, data)
	if err != nil {
		return lease.Grant{}, err
	}
	g := lease.Grant{Value: value, Data: data, Renewable: true}
	if sec.LeaseID != "" {
		g.SourceLeaseID = sec.LeaseID
		g.TTL = time.Duration(sec.LeaseDuration) * time.Second
		g.Renewable = sec.Renewable
	}
	return g, nil
}

// secretData returns the secret's fields as strings, unwrapping KV v2's
// {"data": {...}, "metadata": {...}} envelope.
func secretData(path string, sec *api.Secret) (map[string]string, error) {
	if sec == nil {
		return nil, fmt.Errorf("vault: no secret at path %s", path)
	}
	raw := sec.Data
	if len(raw) == 0 {
		if len(sec.Warnings) > 0 {
			// e.g. KV v2 read without /data/: Vault explains in a warning.
			return nil, fmt.Errorf("vault: no secret at path %s (vault: %s)", path, strings.Join(sec.Warnings, "; "))
		}
		return nil, fmt.Errorf("vault: no secret at path %s", path)
	}
	if sec.LeaseID == "" && isKV2(raw) {
		inner, _ := raw["data"].(map[string]any)
		if inner == nil {
			return nil, fmt.Errorf("vault: no secret at path %s (the latest version is deleted or destroyed)", path)
		}
		raw = inner
	}
	data := make(map[string]string, len(raw))
	for k, v := range raw {
		data[k] = stringify(v)
	}
	return data, nil
}

func isKV2(raw map[string]any) bool {
	_, hasMeta := raw["metadata"].(map[string]any)
	d, hasData := raw["data"]
	if !hasMeta || !hasData {
		return false
	}
	_, isMap := d.(map[string]any)
	return isMap || d == nil
}

// pick chooses Grant.Value: the configured field, else the only one, else
// "" (several fields: the injection template reads .Data).
func pick(path, field string, data map[string]string) (string, error) {
	names := slices.Sorted(maps.Keys(data))
	switch {
	case field != "":
		v, ok := data[field]
		if !ok {
			return "", fmt.Errorf("vault: path %s has no field %q; it has fields %v", path, field, names)
		}
		return v, nil
	case len(data) == 1:
		return data[names[0]], nil
	case len(data) == 0:
		return "", fmt.Errorf("vault: path %s has no fields", path)
	default:
		// Several fields and no field: (a database credential's username and
		// password): templates use .Data; one that reads .Value is refused
		// at injection with a message saying to set field:.
		return "", nil
	}
}

func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}

// seconds rounds ttl up to whole seconds, Vault's unit, so that a TTL shorter
// than asked really is a cap and not rounding.
func seconds(ttl time.Duration) int {
	return int((ttl + time.Second - 1) / time.Second)
}

// capWarning reports Vault's "TTL of "1h" exceeded the effective max_ttl of
// "10m"; TTL value is capped accordingly" warning.
func capWarning(warnings []string) bool {
	for _, w := range warnings {
		if strings.Contains(w, "exceeded the effective max_ttl") {
			return true
		}
	}
	return false
}
