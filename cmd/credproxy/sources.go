package main

import (
	"fmt"
	"log/slog"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/static"
	"github.com/credproxy/credproxy/lease/vault"
	"github.com/credproxy/credproxy/rules"
)

// storeClient is what one `sources:` entry is built into: its client (a
// Vault client, an OAuth2 token source) and how a credential naming the
// entry gets its lease.Source from it. Credentials of one entry share it,
// and a reload keeps it while the entry's definition is unchanged: one Vault
// login, one user of a rotating refresh token.
type storeClient struct {
	def    string // rules.Config.SourceDefinition of the entry it was built for
	source func(c *rules.Credential) (lease.Source, error)
	close  func()
}

// newStoreClient builds the client of `sources:` entry s. clock (nil: real
// time) is the lease manager's, for sources that read the time themselves.
func newStoreClient(s *rules.Source, log *slog.Logger, clock lease.Clock) (*storeClient, error) {
	switch s.Type {
	case rules.SourceOAuth2:
		src, err := newOAuth2Source(s, log)
		if err != nil {
			return nil, err
		}
		return &storeClient{source: func(*rules.Credential) (lease.Source, error) { return src, nil }, close: func() {}}, nil
	case rules.SourceGitHubApp:
		return &storeClient{source: func(*rules.Credential) (lease.Source, error) { return newGitHubApp(s, log, clock) }, close: func() {}}, nil
	case rules.SourceExec:
		return &storeClient{source: func(*rules.Credential) (lease.Source, error) { return newExecSource(s, log, clock) }, close: func() {}}, nil
	default:
		client, err := newVaultClient(s, log)
		if err != nil {
			return nil, err
		}
		return &storeClient{source: func(c *rules.Credential) (lease.Source, error) { return client.Source(c.Path, c.Field), nil },
			close: client.Close}, nil
	}
}

// builtCred is a lease credential and the store client it came from (nil
// for env and file).
type builtCred struct {
	lease.Credential
	client *storeClient
}

// buildCredential makes credential name of cfg, taking its store client
// from clients, or building it there (nil: env and file need none).
func buildCredential(cfg *rules.Config, name string, clients map[string]*storeClient, log *slog.Logger, clock lease.Clock) (builtCred, error) {
	c := cfg.Credentials[name]
	b := builtCred{Credential: lease.Credential{Name: name, SourceName: c.Source, Policy: leasePolicy(c),
		Definition: cfg.CredentialDefinition(name)}}
	switch c.Source {
	case "env":
		b.Source = static.Env{Var: c.Env}
		return b, nil
	case "file":
		b.Source = static.File{Path: c.File}
		return b, nil
	}
	sc := clients[c.Source]
	if sc == nil {
		s := cfg.Sources[c.Source]
		if s == nil {
			return builtCred{}, fmt.Errorf("credential %q: unknown source %q", name, c.Source)
		}
		var err error
		if sc, err = newStoreClient(s, log, clock); err != nil {
			return builtCred{}, fmt.Errorf("credential %q: %w", name, err)
		}
		sc.def = cfg.SourceDefinition(c.Source)
		clients[c.Source] = sc
	}
	src, err := sc.source(c)
	if err != nil {
		return builtCred{}, fmt.Errorf("credential %q: %w", name, err)
	}
	b.Source, b.client = src, sc
	return b, nil
}

func leasePolicy(c *rules.Credential) lease.Policy {
	return lease.Policy{
		TTL:               c.Policy.DefaultTTL,
		MaxTTL:            c.Policy.MaxTTL,
		RenewBeforeExpiry: c.Policy.RenewBeforeExpiry,
		IdleTimeout:       c.Policy.IdleTimeout,
		AutoRenew:         c.Policy.AutoRenew,
		PerIdentity:       c.Scope == rules.ScopeIdentity,
		PerTask:           c.Scope == rules.ScopeTask,
	}
}

func newVaultClient(s *rules.Source, log *slog.Logger) (*vault.Client, error) {
	if s == nil || s.Type != "vault" {
		return nil, fmt.Errorf("unknown source")
	}
	return vault.NewClient(vault.Config{
		Address:   s.Address,
		Namespace: s.Namespace,
		CAFile:    s.CAFile,
		Logger:    log.With("source", s.Name),
		Auth: vault.Auth{
			Method: s.Auth.Method, Token: s.Auth.Token, TokenFile: s.Auth.TokenFile,
			RoleID: s.Auth.RoleID, SecretIDFile: s.Auth.SecretIDFile,
			Role: s.Auth.Role, JWTFile: s.Auth.JWTFile, Mount: s.Auth.Mount,
		},
	})
}
