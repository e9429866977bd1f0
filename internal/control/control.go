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
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/proxy"
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
	// ErrReloadFailed wraps the reload hook's error: the config in force
	// stays.
	ErrReloadFailed = errors.New("reload failed")
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
		return fmt.Errorf("%w: %w", ErrReloadFailed, err)
	}
	return nil
}

// maxPurposeBytes bounds a task's purpose: it goes into every audit line of
// the task's leases.
const maxPurposeBytes = 256

// TaskRequest is BeginTask's input.
type TaskRequest struct {
	Purpose string
	TTL     time.Duration // 0: the default (15m); capped at leases.maxTTL and the named credentials' maxTTL
	// Identity restricts the task to one caller; "" lets every caller use it.
	Identity string
	// Credentials are `scope: task` credentials acquired at once.
	Credentials []string
}

// BeginTask opens a task and acquires the credentials it names (all or
// none). Bad input wraps ErrInvalid; a store failure is returned as is.
func (c *Control) BeginTask(ctx context.Context, r TaskRequest) (lease.TaskInfo, error) {
	if err := r.check(); err != nil {
		return lease.TaskInfo{}, err
	}
	if err := c.checkIdentity(r.Identity); err != nil {
		return lease.TaskInfo{}, err
	}
	in, err := c.leases.BeginTask(ctx, lease.TaskSpec{Purpose: r.Purpose, TTL: r.TTL, Identity: r.Identity, Credentials: r.Credentials})
	if errors.Is(err, lease.ErrUnknownCredential) || errors.Is(err, lease.ErrNotTaskScoped) {
		return lease.TaskInfo{}, fmt.Errorf("%w: %v (credentials must be scope: task)", ErrInvalid, err)
	}
	return in, err
}

func (r TaskRequest) check() error {
	switch {
	case r.TTL < 0:
		return fmt.Errorf("%w: ttl %s: must be positive", ErrInvalid, r.TTL)
	case len(r.Purpose) > maxPurposeBytes:
		return fmt.Errorf("%w: purpose: longer than %d bytes", ErrInvalid, maxPurposeBytes)
	case !printable(r.Purpose) || !printable(r.Identity):
		return fmt.Errorf("%w: purpose and identity must be printable text on one line", ErrInvalid)
	case len(r.Identity) > maxPurposeBytes:
		return fmt.Errorf("%w: identity: longer than %d bytes", ErrInvalid, maxPurposeBytes)
	}
	seen := map[string]bool{}
	for _, name := range r.Credentials {
		if seen[name] {
			return fmt.Errorf("%w: credentials: %q named twice", ErrInvalid, name)
		}
		seen[name] = true
	}
	return nil
}

// checkIdentity refuses a task for an identity no request can have: it
// would hold its credentials' leases for nobody.
func (c *Control) checkIdentity(identity string) error {
	cfg := c.cfg()
	if identity == "" || cfg == nil {
		return nil
	}
	if !cfg.RequiresAuth() {
		if identity != cfg.Identity {
			return fmt.Errorf("%w: identity %q: every request is the sidecar identity %q (no clients: configured)", ErrInvalid, identity, cfg.Identity)
		}
		return nil
	}
	for _, cl := range cfg.Clients {
		if cl.Name == identity {
			return nil
		}
	}
	return fmt.Errorf("%w: identity %q is not the name of a client in clients", ErrInvalid, identity)
}

// printable reports whether s is valid UTF-8 without control characters: it
// goes into audit lines and logs, which must stay one line each.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// EndTask ends task id and revokes its leases at once (reason task_end),
// returning when they are revoked. An unknown id wraps lease.ErrUnknownTask.
func (c *Control) EndTask(ctx context.Context, id string) (lease.TaskInfo, error) {
	return c.leases.EndTask(ctx, id)
}

// ListTasks describes the open tasks and those ended within the last hour.
func (c *Control) ListTasks() []lease.TaskInfo { return c.leases.Tasks() }

// CredentialInfo describes a configured credential: where it comes from and
// which rules send it where. It has no value, and no path into the store
// beyond the configured one.
type CredentialInfo struct {
	Name   string     `json:"name"`
	Source string     `json:"source"`
	Scope  string     `json:"scope"`
	TTL    string     `json:"ttl"`
	MaxTTL string     `json:"maxTTL"`
	Hosts  []string   `json:"hosts"` // every host pattern of its rules
	Rules  []RuleInfo `json:"rules"`
}

// RuleInfo is one rule that injects a credential.
type RuleInfo struct {
	Name    string   `json:"name"`
	Hosts   []string `json:"hosts"`
	Paths   []string `json:"paths,omitempty"`
	Methods []string `json:"methods,omitempty"`
	Purpose string   `json:"purpose,omitempty"`
}

// ListCredentials describes every configured credential, by name.
func (c *Control) ListCredentials() []CredentialInfo {
	cfg := c.cfg()
	if cfg == nil {
		return []CredentialInfo{}
	}
	out := make([]CredentialInfo, 0, len(cfg.Credentials))
	for _, name := range slices.Sorted(maps.Keys(cfg.Credentials)) {
		cr := cfg.Credentials[name]
		in := CredentialInfo{Name: name, Source: cr.Source, Scope: cr.Scope, TTL: cr.Policy.DefaultTTL.String(),
			MaxTTL: cr.Policy.MaxTTL.String(), Hosts: []string{}, Rules: []RuleInfo{}}
		for _, r := range cfg.Rules {
			if r.Credential != name {
				continue
			}
			in.Rules = append(in.Rules, RuleInfo{Name: r.Name, Hosts: r.Hosts, Paths: r.Paths, Methods: r.Methods, Purpose: r.Purpose})
			for _, h := range r.Hosts {
				if !slices.Contains(in.Hosts, h) {
					in.Hosts = append(in.Hosts, h)
				}
			}
		}
		out = append(out, in)
	}
	return out
}

// Explain says which rule a request would match and what it would inject,
// by name: method and url as an agent would send them, identity the caller
// (a name from clients:; without clients: every request is the config's
// sidecar identity). A bad method or url wraps ErrInvalid.
func (c *Control) Explain(method, rawURL, identity string) (proxy.Explanation, error) {
	cfg := c.cfg()
	if cfg == nil {
		return proxy.Explanation{}, fmt.Errorf("%w: no config loaded", ErrInvalid)
	}
	if method == "" {
		method = http.MethodGet
	}
	if !isToken(method) {
		return proxy.Explanation{}, fmt.Errorf("%w: method %q is not an HTTP method", ErrInvalid, method)
	}
	switch {
	case !cfg.RequiresAuth():
		identity = cfg.Identity // as the proxy: every request is the sidecar's
	case identity == "":
		return proxy.Explanation{}, fmt.Errorf("%w: identity: required when clients: is set", ErrInvalid)
	}
	e, err := proxy.Explain(cfg, method, rawURL, identity)
	if err != nil {
		return proxy.Explanation{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return e, nil
}

func (c *Control) cfg() *rules.Config {
	if c.config == nil {
		return nil
	}
	return c.config()
}

// isToken reports whether s is an RFC 9110 token (a method), at most 32 bytes.
func isToken(s string) bool {
	if len(s) > 32 {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}
