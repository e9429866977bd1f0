// Package exec is the credential-helper source: it runs a configured
// command (a password manager's CLI, an AWS credential_process) as a
// subprocess, without a shell and with a minimal environment, and turns what
// it prints into a lease. A grant cannot be renewed: the lease.Manager runs
// the helper again before expiry. This package schedules nothing.
package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
)

// Defaults and bounds.
const (
	DefaultTimeout = 10 * time.Second
	// MaxOutput bounds what is read of a helper's stdout: more, and it is
	// killed and the run fails. A credential_process answer is under 4 KiB.
	MaxOutput = 64 << 10
	// maxStderr bounds what of its stderr reaches the log.
	maxStderr = 16 << 10
	// waitDelay is how long Wait waits, after the helper exits or is
	// killed, for its output pipes to close (a process outside its group
	// may hold them); then they are closed under it.
	waitDelay = time.Second
)

// Config is one `sources:` entry of type exec.
type Config struct {
	Name    string            // the source's name, for errors
	Command []string          // the helper and its arguments; never run through a shell
	Dir     string            // its working directory ("" = credproxy's)
	Env     map[string]string // added to PATH and HOME, the only variables it inherits
	Timeout time.Duration     // one run; 0 means DefaultTimeout
	// RevokeCommand, when set, is run like Command when a lease ends, with
	// the lease's value on its stdin; nil: Revoke does nothing.
	RevokeCommand []string
	Clock         lease.Clock // for expires_at and Expiration; nil = real time
	// Logger gets the helper's stderr, masked; nil discards. Its records do
	// not name the source: give a logger With it.
	Logger *slog.Logger
}

// command is a resolved helper and its arguments; what names it in errors.
type command struct {
	path, what string
	args       []string
}

func newCommand(name, what string, argv []string) (command, error) {
	if len(argv) == 0 || argv[0] == "" {
		return command{}, fmt.Errorf("exec %s: no %s", name, what)
	}
	path, err := osexec.LookPath(argv[0])
	if err != nil {
		return command{}, fmt.Errorf("exec %s: %s: %w", name, what, err)
	}
	return command{path: path, what: what, args: argv[1:]}, nil
}

// Source runs one helper per Acquire. It is a lease.Source and safe for
// concurrent use.
type Source struct {
	name    string
	acquire command
	revoke  *command // nil: nothing to run on Revoke
	dir     string
	env     []string
	envVals []string // the configured env values, masked in logged stderr too
	timeout time.Duration
	clock   lease.Clock
	log     *slog.Logger
}

var _ lease.Source = (*Source)(nil)

// New resolves the helper on credproxy's PATH and builds its environment.
// It does not run it: the first Acquire does.
func New(cfg Config) (*Source, error) {
	acquire, err := newCommand(cfg.Name, "command", cfg.Command)
	if err != nil {
		return nil, err
	}
	s := &Source{
		name: cfg.Name, acquire: acquire, dir: cfg.Dir,
		timeout: cfg.Timeout, clock: cfg.Clock, log: cfg.Logger,
	}
	if cfg.RevokeCommand != nil {
		revoke, err := newCommand(cfg.Name, "revokeCommand", cfg.RevokeCommand)
		if err != nil {
			return nil, err
		}
		s.revoke = &revoke
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.clock == nil {
		s.clock = lease.RealClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// Only PATH and HOME are inherited: credproxy's environment can hold
	// other credentials (OPENAI_API_KEY for an env source), which a helper
	// has no business seeing.
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range cfg.Env {
		env[k] = v
		s.envVals = append(s.envVals, v)
	}
	for k, v := range env {
		s.env = append(s.env, k+"="+v)
	}
	sort.Strings(s.env)
	return s, nil
}

// Acquire runs the helper and parses what it printed. The grant's TTL is
// the expiry the helper gave (a hard cap, since it cannot be renewed), or 0
// for the credential's TTL.
func (s *Source) Acquire(ctx context.Context, _ lease.Request) (lease.Grant, error) {
	out, err := s.run(ctx, s.acquire, "", nil)
	if err != nil {
		return lease.Grant{}, err
	}
	o, err := parse(out, s.clock.Now())
	if err != nil {
		return lease.Grant{}, s.fail(err)
	}
	s.log.Debug("exec: helper gave a credential", "fields", len(o.data), "ttl", o.ttl)
	return lease.Grant{Value: o.value, Data: o.data, TTL: o.ttl}, nil
}

// Renew always fails permanently: the manager runs the helper again
// instead (it never renews a grant that is not Renewable).
func (s *Source) Renew(context.Context, lease.Grant, time.Duration) (lease.Grant, error) {
	return lease.Grant{}, &lease.SourceError{Kind: lease.ErrPermanent,
		Err: fmt.Errorf("exec %s: a helper's credential cannot be renewed; the helper runs again instead", s.name)}
}

// Revoke runs the revokeCommand with the lease's value on its stdin (one
// line), or does nothing when there is none. Either way the manager wipes
// its own copy of the value.
func (s *Source) Revoke(ctx context.Context, g lease.Grant) error {
	if s.revoke == nil || g.Value == "" {
		return nil
	}
	masks := []string{g.Value}
	for _, v := range g.Data {
		masks = append(masks, v)
	}
	_, err := s.run(ctx, *s.revoke, g.Value+"\n", masks)
	return err
}

// fail wraps a failure's fixed text (never the helper's output) as a
// transient SourceError, retried with the manager's backoff.
func (s *Source) fail(err error) error {
	return &lease.SourceError{Err: fmt.Errorf("exec %s: %w", s.name, err)}
}

// run runs c once, with stdin ("" for none), and returns its stdout. masks
// are masked in its logged stderr, beside what it printed. The helper gets its own
// process group, and the whole group is killed at the timeout, when its
// stdout passes MaxOutput, and after it exits: a grandchild holding the
// pipe open cannot hold Acquire, nor outlive the run.
func (s *Source) run(ctx context.Context, c command, stdin string, masks []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cmd := osexec.CommandContext(ctx, c.path, c.args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = waitDelay
	stdout := &capped{max: MaxOutput, over: cancel}
	stderr := &capped{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, s.fail(fmt.Errorf("start %s: %w", c.what, err))
	}
	err := cmd.Wait()
	_ = killGroup(cmd) // what the helper left behind in its group
	printed, overflow := stdout.result()
	out, err := s.outcome(ctx, c, printed, overflow, err)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	// Masked of everything printed, whether or not it was a credential.
	s.logStderr(c, stderr, printed, masks, level)
	return out, err
}

// outcome turns how the run ended into its output or a fixed-text error.
func (s *Source) outcome(ctx context.Context, c command, out []byte, overflow bool, err error) ([]byte, error) {
	switch {
	case overflow:
		return nil, s.fail(fmt.Errorf("%s printed more than %d bytes; killed", c.helper(), MaxOutput))
	case err == nil: // it exited 0 with its output complete, even if the timeout came just after
		return out, nil
	case ctx.Err() != nil:
		cause := ctx.Err()
		if errors.Is(cause, context.DeadlineExceeded) {
			return nil, s.fail(fmt.Errorf("%s killed after its timeout of %v: %w", c.helper(), s.timeout, cause))
		}
		return nil, s.fail(fmt.Errorf("%s killed: %w", c.helper(), cause))
	}
	var exit *osexec.ExitError
	switch {
	case errors.As(err, &exit):
		return nil, s.fail(exitError(c.helper(), exit))
	case errors.Is(err, osexec.ErrWaitDelay):
		// It exited 0, but something it started held its stdout open; that
		// was killed with the group and the output read so far stands.
		s.log.Warn("exec: the " + c.helper() + " left a process holding its output open; it was killed")
		return out, nil
	}
	return nil, s.fail(fmt.Errorf("%s: %w", c.helper(), err))
}

// helper names c in messages: "helper" or "revoke helper".
func (c command) helper() string {
	if c.what == "revokeCommand" {
		return "revoke helper"
	}
	return "helper"
}

// exitError says how the helper ended: its status or signal only.
func exitError(helper string, e *osexec.ExitError) error {
	if ws, ok := e.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("%s killed by signal %v", helper, ws.Signal())
	}
	return fmt.Errorf("%s exited with status %d", helper, e.ExitCode())
}

// killGroup kills the helper's whole process group. Once the group is
// empty the kill finds nothing, which is fine.
func killGroup(cmd *osexec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// logStderr logs what the helper wrote to stderr, a line per record, with
// everything it printed on stdout masked (a helper may print the secret on
// both) and the configured env values too (a service-account token).
func (s *Source) logStderr(c command, stderr *capped, stdout []byte, masks []string, level slog.Level) {
	text, dropped := stderr.result()
	if len(text) == 0 {
		return
	}
	vals := append([]string{strings.TrimSpace(string(stdout))}, s.envVals...)
	vals = append(vals, masks...)
	for _, line := range strings.Split(string(stdout), "\n") {
		vals = append(vals, strings.TrimSpace(line))
	}
	if o, err := parse(stdout, s.clock.Now()); err == nil {
		vals = append(vals, o.value)
		for _, v := range o.data {
			vals = append(vals, v)
		}
	} else {
		vals = append(vals, jsonStrings(stdout)...)
	}
	sc := secret.NewScrubberMin(secret.MinInjectLen, vals...)
	for _, line := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
		s.log.Log(context.Background(), level, "exec: "+c.helper()+" stderr", "line", sc.String(strings.TrimRight(line, "\r")))
	}
	if dropped {
		s.log.Log(context.Background(), level, "exec: "+c.helper()+" stderr cut", "limit_bytes", maxStderr)
	}
}

// capped keeps the first max bytes written to it. Past max it calls over
// (once), if set, and drops the rest.
type capped struct {
	mu   sync.Mutex
	buf  []byte
	max  int
	full bool
	over func()
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); len(p) > room {
		c.buf = append(c.buf, p[:max(room, 0)]...)
		if !c.full && c.over != nil {
			c.over()
		}
		c.full = true
		return len(p), nil
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *capped) result() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf, c.full
}
