package rules

import (
	"os/exec"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SourceExec is the `type:` of a source that runs a credential helper (a
// password manager's CLI, an AWS credential_process) and takes what it
// prints as the lease.
const SourceExec = "exec"

// Bounds of an exec source's timeout.
const (
	DefaultExecTimeout = 10 * time.Second
	MaxExecTimeout     = 5 * time.Minute
)

// ExecSource is the type-specific part of a `sources:` entry of type exec.
// Its credentials take no path: the value is what the helper prints.
type ExecSource struct {
	// Command is the helper and its arguments, run without a shell. A first
	// element with a slash is a path, taken from the config's directory; a
	// bare name is looked up on credproxy's own PATH.
	Command []string
	// RevokeCommand, if set, runs like Command when a lease ends (idle,
	// rotated, shutdown), with the lease's value on its stdin.
	RevokeCommand []string
	// Env is added to the helper's environment, which otherwise holds only
	// PATH and HOME: never credproxy's whole environment.
	Env     map[string]string
	Timeout time.Duration // one run; it is killed (its process group) past it
	Dir     string        // the helper's working directory: the config file's
}

func (l *loader) execSource(e entry) *Source {
	f := l.fields(e.value, e.field, "type", "command", "revokeCommand", "env", "timeout")
	x := &ExecSource{
		Command:       l.command(f["command"], join(e.field, "command")),
		RevokeCommand: l.command(f["revokeCommand"], join(e.field, "revokeCommand")),
		Timeout:       l.duration(f["timeout"], join(e.field, "timeout"), DefaultExecTimeout),
		Dir:           l.dir,
	}
	for _, v := range l.entries(f["env"], join(e.field, "env")) {
		s, ok := l.scalar(v.value, v.field)
		if !ok && v.value != nil {
			continue
		}
		if x.Env == nil {
			x.Env = map[string]string{}
		}
		x.Env[v.key] = s
	}
	return &Source{Name: e.key, Type: SourceExec, Exec: x, Line: l.line(e.field)}
}

// command reads a command list; a first element with a slash is a path,
// taken from the config's directory.
func (l *loader) command(n *yaml.Node, field string) []string {
	argv := l.strs(n, field)
	if len(argv) > 0 && strings.Contains(argv[0], "/") {
		argv[0] = l.abs(argv[0])
	}
	return argv
}

// checkExecSource checks an exec source's commands, env and timeout.
func (l *loader) checkExecSource(s *Source, field string) {
	x := s.Exec
	if len(x.Command) == 0 {
		l.errf(join(field, "command"), "required for type exec: the helper and its arguments, as a list (no shell)")
	}
	l.checkCommand(x.Command, join(field, "command"))
	if l.has(join(field, "revokeCommand")) && len(x.RevokeCommand) == 0 {
		l.errf(join(field, "revokeCommand"), "empty: leave it out, or give the helper and its arguments")
	}
	l.checkCommand(x.RevokeCommand, join(field, "revokeCommand"))
	for _, k := range sortedKeys(x.Env) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			l.errf(join(join(field, "env"), k), "bad variable name %q", k)
		}
		if strings.IndexByte(x.Env[k], 0) >= 0 {
			l.errf(join(join(field, "env"), k), "holds a NUL byte")
		}
	}
	if x.Timeout <= 0 || x.Timeout > MaxExecTimeout {
		l.errf(join(field, "timeout"), "must be positive and at most %v, not %v", MaxExecTimeout, x.Timeout)
	}
}

// checkCommand wants a command's helper to exist and be executable at
// start, not fail at the first request.
func (l *loader) checkCommand(argv []string, field string) {
	if len(argv) == 0 {
		return
	}
	if argv[0] == "" {
		l.errf(index(field, 0), "empty: want the helper's name or path")
	} else if _, err := exec.LookPath(argv[0]); err != nil {
		l.errf(index(field, 0), "%v", err)
	}
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			l.errf(index(field, i), "holds a NUL byte")
		}
	}
}

// checkExecCredential: the value of an exec credential is what its helper
// prints; there is no path, field, variable or file to pick.
func (l *loader) checkExecCredential(cr *Credential, field string) {
	for _, k := range []struct{ key, value string }{{"path", cr.Path}, {"field", cr.Field}, {"env", cr.Env}, {"file", cr.File}} {
		if k.value != "" {
			l.errf(join(field, k.key), "does not apply to an exec source: the value is what its helper prints")
		}
	}
}
