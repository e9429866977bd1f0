package oauth2

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// clientCredentials is RFC 6749 4.4: the client authenticates with its id
// and secret (HTTP Basic, as 2.3.1 requires servers to accept).
func (s *Source) clientCredentials() (minter, error) {
	secret, err := s.readSecretFile("clientSecretFile", s.cfg.ClientSecretFile)
	if err != nil {
		return nil, err
	}
	s.clientSecret = secret
	conf := &clientcredentials.Config{
		ClientID: s.cfg.ClientID, ClientSecret: secret, TokenURL: s.cfg.TokenURL,
		Scopes: s.cfg.Scopes, AuthStyle: xoauth2.AuthStyleInHeader,
	}
	if s.cfg.Audience != "" {
		conf.EndpointParams = map[string][]string{"audience": {s.cfg.Audience}}
	}
	// Config.Token fetches anew on every call: no cache of its own.
	return conf.Token, nil
}

// refreshToken is RFC 6749 6. The refresh token is read from its file once;
// when the provider rotates it (RFC 6819 5.2.2.3, OAuth 2.1) the new one is
// kept and written back, so a restart does not present a dead token.
func (s *Source) refreshToken() (minter, error) {
	var secret string
	if s.cfg.ClientSecretFile != "" {
		var err error
		if secret, err = s.readSecretFile("clientSecretFile", s.cfg.ClientSecretFile); err != nil {
			return nil, err
		}
	}
	s.clientSecret = secret
	rt, err := s.readSecretFile("refreshTokenFile", s.cfg.RefreshTokenFile)
	if err != nil {
		return nil, err
	}
	conf := &xoauth2.Config{
		ClientID: s.cfg.ClientID, ClientSecret: secret, Scopes: s.cfg.Scopes,
		Endpoint: xoauth2.Endpoint{TokenURL: s.cfg.TokenURL, AuthStyle: xoauth2.AuthStyleInHeader},
	}
	var mu sync.Mutex // one refresh at a time: a rotated refresh token is good once
	return func(ctx context.Context) (*xoauth2.Token, error) {
		mu.Lock()
		defer mu.Unlock()
		tok, err := conf.TokenSource(ctx, &xoauth2.Token{RefreshToken: rt}).Token()
		if err != nil {
			return nil, err
		}
		if tok.RefreshToken != "" && tok.RefreshToken != rt {
			rt = tok.RefreshToken
			s.secrets.set("refresh_token", rt)
			if err := writeAtomic(s.cfg.RefreshTokenFile, rt); err != nil {
				// The new token is kept in memory, so this process goes on;
				// a restart would present the old, rotated-out token.
				s.log.Error("oauth2: cannot persist the rotated refresh token", "source", s.cfg.Name,
					"file", s.cfg.RefreshTokenFile, "error", s.secrets.scrubber().String(err.Error()))
			} else {
				s.log.Info("oauth2: refresh token rotated and persisted", "source", s.cfg.Name, "file", s.cfg.RefreshTokenFile)
			}
		}
		return tok, nil
	}, nil
}

// jwtBearer is RFC 7523 2.1: a JWT signed with the client's key is the
// grant. With KeyFile, a Google service-account JSON key gives the key, the
// issuer (client_email) and the token_uri, as Google APIs and Vertex AI
// expect; TokenURL overrides its token_uri. With PrivateKeyFile, the JWT is
// issued by ClientID.
func (s *Source) jwtBearer() (minter, error) {
	var conf *jwt.Config
	if s.cfg.KeyFile != "" {
		data, err := os.ReadFile(s.cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("keyFile: %w", err)
		}
		if conf, err = google.JWTConfigFromJSON(data, s.cfg.Scopes...); err != nil {
			// JWTConfigFromJSON's errors name the JSON problem, never the key.
			return nil, fmt.Errorf("keyFile %s: %w", s.cfg.KeyFile, err)
		}
		if s.cfg.TokenURL != "" {
			conf.TokenURL = s.cfg.TokenURL
		}
	} else {
		key, err := s.readSecretFile("privateKeyFile", s.cfg.PrivateKeyFile)
		if err != nil {
			return nil, err
		}
		conf = &jwt.Config{Email: s.cfg.ClientID, PrivateKey: []byte(key), TokenURL: s.cfg.TokenURL, Scopes: s.cfg.Scopes}
	}
	s.secrets.set("private_key", string(conf.PrivateKey))
	if conf.TokenURL == "" {
		return nil, fmt.Errorf("tokenURL required: the key file has no token_uri")
	}
	if err := checkEndpoint(conf.TokenURL); err != nil {
		return nil, fmt.Errorf("keyFile %s: token_uri: %w", s.cfg.KeyFile, err)
	}
	s.cfg.TokenURL = conf.TokenURL
	conf.Audience = s.cfg.Audience // "" = the token URL, as RFC 7523 3 asks
	return func(ctx context.Context) (*xoauth2.Token, error) {
		return conf.TokenSource(ctx).Token() // a new source: no cached token
	}, nil
}

// writeAtomic replaces path with value: a temporary file in the same
// directory, with path's mode, synced, then renamed over path, so that a
// crash leaves the old token or the new one, never half of one.
func writeAtomic(path, value string) error {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// checkEndpoint refuses a token_uri that is not https (plain http only to a
// loopback address), as the config loader does for tokenURL: a key file's
// token_uri is sent a signed grant.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("not a URL: %q", raw)
	}
	if u.Scheme == "https" {
		return nil
	}
	ip := net.ParseIP(u.Hostname())
	if u.Scheme == "http" && (u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("must be https, not %q", raw)
}
