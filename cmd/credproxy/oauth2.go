package main

import (
	"log/slog"

	"github.com/credproxy/credproxy/lease/oauth2"
	"github.com/credproxy/credproxy/rules"
)

// newOAuth2Source builds the token source of a `sources:` entry of type
// oauth2. One is shared by every credential naming the source, so that a
// rotating refresh token is used by one refresh at a time.
func newOAuth2Source(s *rules.Source, log *slog.Logger) (*oauth2.Source, error) {
	o := s.OAuth2
	return oauth2.New(oauth2.Config{
		Name: s.Name, Grant: o.Grant, TokenURL: o.TokenURL, ClientID: o.ClientID,
		ClientSecretFile: o.ClientSecretFile, Scopes: o.Scopes, Audience: o.Audience,
		RefreshTokenFile: o.RefreshTokenFile, KeyFile: o.KeyFile, PrivateKeyFile: o.PrivateKeyFile,
		RevocationURL: o.RevocationURL, CAFile: s.CAFile, Logger: log.With("source", s.Name),
	})
}
