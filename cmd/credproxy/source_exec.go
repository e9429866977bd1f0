package main

import (
	"log/slog"

	"github.com/credproxy/credproxy/lease"
	execsource "github.com/credproxy/credproxy/lease/exec"
	"github.com/credproxy/credproxy/rules"
)

// newExecSource builds the credential-helper source of one credential: each
// credential runs the helper for its own leases.
func newExecSource(s *rules.Source, log *slog.Logger, clock lease.Clock) (lease.Source, error) {
	x := s.Exec
	return execsource.New(execsource.Config{
		Name:          s.Name,
		Command:       x.Command,
		RevokeCommand: x.RevokeCommand,
		Dir:           x.Dir,
		Env:           x.Env,
		Timeout:       x.Timeout,
		Clock:         clock,
		Logger:        log.With("source", s.Name),
	})
}
