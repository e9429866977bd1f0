package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// reloadBudget bounds one reload's revocations of the leases it ends.
const reloadBudget = 30 * time.Second

// watchDebounce is how long the config directory must stay quiet after an
// event before the file is read: an editor's save or a ConfigMap update is
// several events.
const watchDebounce = 200 * time.Millisecond

// Reloader applies a new version of the config file to a running credproxy,
// whole or not at all. SIGHUP, --watch-config and the admin API call Reload.
type Reloader struct {
	path    string
	log     *slog.Logger
	clock   lease.Clock
	metrics *metrics.Metrics

	mu    sync.Mutex // one reload at a time; guards the fields below
	cfg   *rules.Config
	sum   [sha256.Size]byte // of the file last read, applied or refused
	creds *credSet
	proxy *proxy.Proxy
	mgr   *lease.Manager

	stopTriggers context.CancelFunc // ends the SIGHUP and file watchers
}

// newReloader builds the credentials of cfg, the config credproxy starts
// with; attach gives it the proxy and lease manager to reload.
func newReloader(cfg *rules.Config, log *slog.Logger, clock lease.Clock, m *metrics.Metrics) (*Reloader, error) {
	cs, err := (&credSet{}).next(cfg, log, clock)
	if err != nil {
		return nil, err
	}
	r := &Reloader{path: cfg.Path, log: log, clock: clock, metrics: m, cfg: cfg, creds: cs}
	if data, err := os.ReadFile(cfg.Path); err == nil {
		r.sum = sha256.Sum256(data)
	}
	m.ConfigApplied(time.Now())
	return r, nil
}

// credentials are the lease credentials of the config in force.
func (r *Reloader) credentials() []lease.Credential {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.creds.credentials()
}

func (r *Reloader) attach(p *proxy.Proxy, mgr *lease.Manager) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proxy, r.mgr = p, mgr
}

// closeSources stops the store clients of the config in force, after the
// lease manager has shut down.
func (r *Reloader) closeSources() {
	if r.stopTriggers != nil {
		r.stopTriggers()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.creds.closeUnused(nil)
}

// Reload reads the config file again and applies it. A file that does not
// load is refused whole: each problem is logged as file:line: field, and the
// config in force stays. Otherwise the new rules apply to every request that
// starts from now on (requests in flight finish on the old ones); credentials
// whose definition did not change keep their leases, removed or changed ones
// have theirs revoked (config_changed); settings only read at start are kept
// and logged as needing a restart.
func (r *Reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.reloadLocked(ctx)
	r.metrics.ConfigReload(err == nil)
	if err != nil {
		var problems rules.ConfigErrors
		if errors.As(err, &problems) {
			for _, p := range problems {
				r.log.Error("config reload: invalid config", "problem", p.Error(), "file", p.File, "line", p.Line, "field", p.Field)
			}
		}
		r.log.Error("config reload failed; the config in force is kept", "file", r.path, "err", err)
		return err
	}
	r.metrics.ConfigApplied(time.Now())
	return nil
}

func (r *Reloader) reloadLocked(ctx context.Context) error {
	if r.proxy == nil {
		return errors.New("config reload: credproxy is still starting")
	}
	data, err := os.ReadFile(r.path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	r.sum = sha256.Sum256(data)
	cfg, err := rules.Parse(r.path, data)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		r.log.Warn(w)
	}
	changed, err := rules.RestartOnly(r.cfg, cfg)
	if err != nil {
		return err
	}
	if len(changed) > 0 {
		r.log.Warn("config reload: these settings changed but only apply after a restart; the running values are kept",
			"file", r.path, "settings", changed)
	}
	next, err := r.creds.next(cfg, r.log, r.clock)
	if err != nil {
		return err
	}
	// The manager first: once the proxy matches on the new rules, every
	// credential they name must be there. Its revocations are not cut short
	// by a caller that gives up (an admin request whose client hung up).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reloadBudget)
	defer cancel()
	if err := r.mgr.Reconfigure(rctx, next.credentials()); err != nil {
		if errors.Is(err, lease.ErrClosed) {
			next.closeUnused(r.creds)
			return fmt.Errorf("config reload: %w", err)
		}
		// The new set is in place; only a store's revocation failed.
		r.log.Warn("config reload: revoking the leases of changed credentials failed", "err", err)
	}
	r.proxy.SetConfig(cfg)
	kept, added, removed := r.creds.diff(next)
	r.creds.closeUnused(next)
	r.cfg, r.creds = cfg, next
	r.log.Info("config reloaded", "file", r.path, "rules", len(cfg.Rules), "credentials", len(cfg.Credentials),
		"credentials_kept", kept, "credentials_new_or_changed", added, "credentials_removed", removed)
	return nil
}

// watchSignals reloads on every SIGHUP until ctx is done.
func (r *Reloader) watchSignals(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				r.log.Info("SIGHUP: reloading the config", "file", r.path)
				_ = r.Reload(ctx)
			}
		}
	}()
}

// watchFile reloads when the config file's content changes, until ctx is
// done. It watches the file's directory, not the file: an editor that saves
// by renaming a new file over the old one, and a Kubernetes ConfigMap that
// swaps its ..data symlink, replace the file a watch on it would follow.
// Events are debounced, and a reload happens only when the bytes differ
// from those last read, so writes to other files there (an audit log) cost
// a read and nothing more.
func (r *Reloader) watchFile(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("--watch-config: %w", err)
	}
	dir := filepath.Dir(r.path)
	if err := w.Add(dir); err != nil {
		w.Close()
		return fmt.Errorf("--watch-config: watch %s: %w", dir, err)
	}
	r.log.Info("watching the config for changes", "file", r.path, "dir", dir)
	go func() {
		defer w.Close()
		quiet := time.NewTimer(time.Hour)
		quiet.Stop()
		defer quiet.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				quiet.Reset(watchDebounce) // one timer, however many events (an audit log beside the file)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				r.log.Warn("--watch-config: watcher error", "dir", dir, "err", err)
			case <-quiet.C:
				if r.changed() {
					r.log.Info("config file changed: reloading", "file", r.path)
					_ = r.Reload(ctx)
				}
			}
		}
	}()
	return nil
}

// changed reports whether the file now holds other bytes than those last
// read. A file that cannot be read (mid-swap) counts as changed: Reload
// then says why it failed.
func (r *Reloader) changed() bool {
	data, err := os.ReadFile(r.path)
	r.mu.Lock()
	defer r.mu.Unlock()
	return err != nil || sha256.Sum256(data) != r.sum
}

// credSet is the lease credentials of one config and the store clients
// (one per `sources:` entry used) they came from. A reload builds only what
// changed: unchanged credentials keep their lease.Credential, so the manager
// keeps their leases, and unchanged entries keep their clients, so new
// credentials on them share those. A client is closed once no credential of
// the set in force uses it.
type credSet struct {
	byName  map[string]builtCred
	clients map[string]*storeClient // by `sources:` entry
}

// next builds the set for cfg from s, reusing every credential and client
// whose definition did not change and building the others. Only
// cfg.Credentials and cfg.Sources are read. On an error, what it built is
// closed and s is untouched.
func (s *credSet) next(cfg *rules.Config, log *slog.Logger, clock lease.Clock) (*credSet, error) {
	n := &credSet{byName: make(map[string]builtCred, len(cfg.Credentials)), clients: map[string]*storeClient{}}
	for name, sc := range s.clients {
		if sc.def == cfg.SourceDefinition(name) {
			n.clients[name] = sc
		}
	}
	for name := range cfg.Credentials {
		if old, ok := s.byName[name]; ok && old.Definition == cfg.CredentialDefinition(name) {
			n.byName[name] = old // its definition covers its source's: that client is in n.clients
			continue
		}
		b, err := buildCredential(cfg, name, n.clients, log, clock)
		if err != nil {
			n.closeUnused(s)
			return nil, err
		}
		n.byName[name] = b
	}
	return n, nil
}

func (s *credSet) credentials() []lease.Credential {
	out := make([]lease.Credential, 0, len(s.byName))
	for _, c := range s.byName {
		out = append(out, c.Credential)
	}
	return out
}

// closeUnused closes the clients of s that keep (nil: none) does not hold.
func (s *credSet) closeUnused(keep *credSet) {
	for name, sc := range s.clients {
		if keep == nil || keep.clients[name] != sc {
			sc.close()
		}
	}
}

// diff counts the credentials next keeps from s, those it builds anew, and
// those of s it drops.
func (s *credSet) diff(next *credSet) (kept, built, removed int) {
	for name, c := range next.byName {
		if old, ok := s.byName[name]; ok && old.Definition == c.Definition { // only a changed definition is rebuilt
			kept++
		} else {
			built++
		}
	}
	for name := range s.byName {
		if _, ok := next.byName[name]; !ok {
			removed++
		}
	}
	return kept, built, removed
}

// startTriggers starts what o asks to reload on (SIGHUP, file changes),
// until ctx is done, and hands the Reloader to o.Reloader.
func (r *Reloader) startTriggers(ctx context.Context, o serveOptions) error {
	ctx, r.stopTriggers = context.WithCancel(ctx)
	if o.WatchConfig {
		if err := r.watchFile(ctx); err != nil {
			return err
		}
	}
	if o.ReloadOnSIGHUP {
		r.watchSignals(ctx)
	}
	if o.Reloader != nil {
		o.Reloader(r)
	}
	return nil
}
