package main

import (
	"fmt"
	"log/slog"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/oauth2"
	"github.com/credproxy/credproxy/lease/static"
	"github.com/credproxy/credproxy/lease/vault"
	"github.com/credproxy/credproxy/rules"
)

// buildCredentials turns the config's credentials into lease credentials,
// creating one store client per `sources:` entry that is used. close stops
// the clients' background work. clock (nil: real time) is the lease
// manager's, for sources that read the time themselves.
func buildCredentials(cfg *rules.Config, log *slog.Logger, clock lease.Clock) (creds []lease.Credential, close func(), err error) {
	clients := map[string]*vault.Client{}
	tokenSources := map[string]*oauth2.Source{}
	close = func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for name, c := range cfg.Credentials {
		lc := lease.Credential{Name: name, SourceName: c.Source, Policy: leasePolicy(c)}
		switch c.Source {
		case "env":
			lc.Source = static.Env{Var: c.Env}
		case "file":
			lc.Source = static.File{Path: c.File}
		default:
			if s := cfg.Sources[c.Source]; s != nil && s.Type == rules.SourceOAuth2 {
				src, ok := tokenSources[c.Source]
				if !ok {
					if src, err = newOAuth2Source(s, log); err != nil {
						close()
						return nil, nil, fmt.Errorf("credential %q: %w", name, err)
					}
					tokenSources[c.Source] = src
				}
				lc.Source = src
				break
			}
			if s := cfg.Sources[c.Source]; s != nil && s.Type == rules.SourceGitHubApp {
				if lc.Source, err = newGitHubApp(s, log, clock); err != nil {
					close()
					return nil, nil, fmt.Errorf("credential %q: %w", name, err)
				}
				break
			}
			if s := cfg.Sources[c.Source]; s != nil && s.Type == rules.SourceExec {
				if lc.Source, err = newExecSource(s, log, clock); err != nil {
					close()
					return nil, nil, fmt.Errorf("credential %q: %w", name, err)
				}
				break
			}
			client, ok := clients[c.Source]
			if !ok {
				client, err = newVaultClient(cfg.Sources[c.Source], log)
				if err != nil {
					close()
					return nil, nil, fmt.Errorf("credential %q: %w", name, err)
				}
				clients[c.Source] = client
			}
			lc.Source = client.Source(c.Path, c.Field)
		}
		creds = append(creds, lc)
	}
	return creds, close, nil
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
