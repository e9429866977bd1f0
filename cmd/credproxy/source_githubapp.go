package main

import (
	"log/slog"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/githubapp"
	"github.com/credproxy/credproxy/rules"
)

// newGitHubApp builds the GitHub App source of one credential: each
// credential mints its own tokens.
func newGitHubApp(s *rules.Source, log *slog.Logger, clock lease.Clock) (lease.Source, error) {
	g := s.GitHubApp
	return githubapp.New(githubapp.Config{
		AppID:          g.AppID,
		InstallationID: g.InstallationID,
		PrivateKeyFile: g.PrivateKeyFile,
		BaseURL:        g.BaseURL,
		CAFile:         s.CAFile,
		Permissions:    g.Permissions,
		Repositories:   g.Repositories,
		Timeout:        g.Timeout,
		Clock:          clock,
		Logger:         log.With("source", s.Name),
	})
}
