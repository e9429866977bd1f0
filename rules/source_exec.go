package rules

import (
	"os/exec"
	"strings"
	"time"
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
	// Env is added to the helper's environment, which otherwise holds only
	// PATH and HOME: never credproxy's whole environment.
	Env     map[string]string
	Timeout time.Duration // one run; it is killed (its process group) past it
	Dir     string        // the helper's working directory: the config file's
}

func (l *loader) execSource(e entry) *Source {
	f := l.fields(e.value, e.field, "type", "command", "env", "timeout")
	x := &ExecSource{
		Command: l.strs(f["command"], join(e.field, "command")),
		Timeout: l.duration(f["timeout"], join(e.field, "timeout"), DefaultExecTimeout),
		Dir:     l.dir,
	}
	if len(x.Command) > 0 && strings.Contains(x.Command[0], "/") {
		x.Command[0] = l.abs(x.Command[0])
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

// checkExecSource checks an exec source: the helper must be there and
// executable at start, not fail at the first request.
func (l *loader) checkExecSource(s *Source, field string) {
	x := s.Exec
	cf := join(field, "command")
	switch {
	case len(x.Command) == 0:
		l.errf(cf, "required for type exec: the helper and its arguments, as a list (no shell)")
	case x.Command[0] == "":
		l.errf(index(cf, 0), "empty: want the helper's name or path")
	default:
		if _, err := exec.LookPath(x.Command[0]); err != nil {
			l.errf(index(cf, 0), "%v", err)
		}
	}
	for i, a := range x.Command {
		if strings.IndexByte(a, 0) >= 0 {
			l.errf(index(cf, i), "holds a NUL byte")
		}
	}
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

// checkExecCredential: the value of an exec credential is what its helper
// prints; there is no path, field, variable or file to pick.
func (l *loader) checkExecCredential(cr *Credential, field string) {
	for _, k := range []struct{ key, value string }{{"path", cr.Path}, {"field", cr.Field}, {"env", cr.Env}, {"file", cr.File}} {
		if k.value != "" {
			l.errf(join(field, k.key), "does not apply to an exec source: the value is what its helper prints")
		}
	}
}
