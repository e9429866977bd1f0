package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// call runs op with a token, logging in first if needed. When Vault answers
// 403 and the token turns out to be stale (expired, revoked, or rotated in
// tokenFile), it gets a new token and runs op once more; a 403 with a valid
// token is a policy denial and is returned as is.
func (c *Client) call(ctx context.Context, op func() error) error {
	gen, err := c.ensureLogin(ctx)
	if err != nil {
		return err
	}
	err = op()
	if !isForbidden(err) {
		return err
	}
	retry, lerr := c.refresh(ctx, gen)
	if lerr != nil {
		return lerr
	}
	if !retry {
		return err
	}
	return op()
}

// ensureLogin returns the current token generation, logging in on first use.
func (c *Client) ensureLogin(ctx context.Context) (uint64, error) {
	if g := c.gen.Load(); g > 0 {
		return g, nil
	}
	tries := c.tries.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.gen.Load(); g > 0 {
		return g, nil
	}
	if c.tries.Load() != tries && c.loginErr != nil && !isContextErr(c.loginErr) {
		// Someone failed while we waited (Vault down, say): share their
		// answer instead of queueing one slow attempt per caller. A failure
		// of their own context is not ours to share.
		return 0, c.loginErr
	}
	c.loginErr = c.loginLocked(ctx)
	c.tries.Add(1) // after the attempt: callers that arrived during it share it
	if c.loginErr != nil {
		return 0, c.loginErr
	}
	return c.gen.Load(), nil
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// refresh replaces a token that Vault rejected while it was generation gen.
// It reports whether the caller should retry.
func (c *Client) refresh(ctx context.Context, gen uint64) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return true, nil // another caller already replaced it
	}
	if c.auth.Method == MethodToken && (c.auth.Token != "" || c.auth.TokenFile == "") {
		return false, nil // a fixed token: nothing else to try
	}
	_, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
	if !isForbidden(err) {
		// The token is fine (a policy denial), or Vault cannot tell us now.
		return false, nil
	}
	switch c.auth.Method {
	case MethodToken:
		tok, err := c.readTokenFile()
		if err != nil || tok == c.api.Token() {
			return false, err
		}
		c.log.Info("vault token file changed; using the new token", "file", c.auth.TokenFile)
	default:
		c.log.Info("vault rejected the token; logging in again", "method", c.auth.Method)
	}
	if err := c.loginLocked(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// loginLocked gets a new token and records its lifetime. c.mu must be held.
func (c *Client) loginLocked(ctx context.Context) error {
	var (
		ttl       time.Duration
		renewable bool
		err       error
	)
	switch c.auth.Method {
	case MethodToken:
		ttl, renewable, err = c.useToken(ctx)
	default:
		ttl, renewable, err = c.loginMethod(ctx)
	}
	if err != nil {
		return err
	}
	c.ttl, c.renew = ttl, renewable
	c.expires = time.Time{}
	if ttl > 0 {
		c.expires = time.Now().Add(ttl)
	}
	c.logins++
	c.gen.Add(1)
	c.log.Info("vault login", "method", c.auth.Method, "ttl", ttl, "renewable", renewable)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.startRenewer()
	return nil
}

// useToken sets the configured token and looks up its lifetime.
func (c *Client) useToken(ctx context.Context) (time.Duration, bool, error) {
	tok := c.auth.Token
	if tok == "" && c.auth.TokenFile != "" {
		var err error
		if tok, err = c.readTokenFile(); err != nil {
			return 0, false, err
		}
	}
	if tok == "" {
		tok = os.Getenv(api.EnvVaultToken)
	}
	if tok == "" {
		return 0, false, errors.New("login: no token (set auth.token, auth.tokenFile or $VAULT_TOKEN)")
	}
	c.remember(tok)
	c.api.SetToken(tok)
	info, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
	switch {
	case isForbidden(err):
		// Invalid, or not allowed to look itself up: the first real call
		// tells which. Either way we cannot renew it.
		c.log.Warn("vault token lookup-self denied; the token will not be renewed")
		return 0, false, nil
	case err != nil:
		return 0, false, c.wrap("login", "auth/token/lookup-self", err)
	}
	ttl, _ := info.TokenTTL()
	renewable, _ := info.TokenIsRenewable()
	return ttl, renewable && ttl > 0, nil
}

// readLoginFile reads a secret ID or a JWT; the file is re-read on every
// login so that a rotated one is picked up.
func readLoginFile(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("login: %s file: %w", what, err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("login: %s file %s is empty", what, path)
	}
	return string(b), nil
}

func (c *Client) readTokenFile() (string, error) {
	b, err := os.ReadFile(c.auth.TokenFile)
	if err != nil {
		return "", fmt.Errorf("login: token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("login: token file %s is empty", c.auth.TokenFile)
	}
	return tok, nil
}

// loginMethod logs in with approle or kubernetes. The secret ID and the JWT
// are read from their files on every login, so rotated ones are picked up.
func (c *Client) loginMethod(ctx context.Context) (time.Duration, bool, error) {
	var (
		m   api.AuthMethod
		err error
	)
	// Read the secret ID and the JWT here, not in the auth library, so that
	// they are masked in whatever an error page echoes back.
	switch c.auth.Method {
	case MethodAppRole:
		var id string
		if id, err = readLoginFile(c.auth.SecretIDFile, "secret ID"); err == nil {
			c.remember(id)
			m, err = approle.NewAppRoleAuth(c.auth.RoleID,
				&approle.SecretID{FromString: strings.TrimSuffix(id, "\n")}, approle.WithMountPath(c.auth.Mount))
		}
	case MethodKubernetes:
		var jwt string
		if jwt, err = readLoginFile(c.auth.JWTFile, "service account token"); err == nil {
			c.remember(jwt)
			m, err = kubernetes.NewKubernetesAuth(c.auth.Role,
				kubernetes.WithServiceAccountToken(jwt), kubernetes.WithMountPath(c.auth.Mount))
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("login (%s): %w", c.auth.Method, err)
	}
	// Log in on a token-less clone: Vault rejects a login that carries a
	// stale token, and the shared client must keep working meanwhile.
	lc, err := c.api.CloneWithHeaders()
	if err != nil {
		return 0, false, fmt.Errorf("login (%s): %w", c.auth.Method, err)
	}
	lc.ClearToken()
	s, err := lc.Auth().Login(ctx, m)
	if err != nil {
		return 0, false, c.wrap("login", "auth/"+c.auth.Mount+"/login", err)
	}
	if s == nil || s.Auth == nil {
		return 0, false, fmt.Errorf("login (%s): Vault returned no token", c.auth.Method)
	}
	c.remember(s.Auth.ClientToken)
	c.api.SetToken(s.Auth.ClientToken)
	return time.Duration(s.Auth.LeaseDuration) * time.Second, s.Auth.Renewable, nil
}

// startRenewer starts the token renewer once, after the first login.
func (c *Client) startRenewer() {
	c.startOnce.Do(func() {
		c.started = true
		go c.renewLoop()
	})
}

// renewLoop keeps the token alive: renew-self at two thirds of its TTL while
// Vault extends it, then (approle, kubernetes) a fresh login before it runs
// out. It never revokes a token: that would revoke its dynamic leases too.
func (c *Client) renewLoop() {
	defer close(c.done)
	for {
		var tick <-chan time.Time
		var timer *time.Timer
		if wait, ok := c.nextRenewal(); ok {
			timer = time.NewTimer(wait)
			tick = timer.C
		}
		select {
		case <-c.ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-c.wake:
			if timer != nil {
				timer.Stop()
			}
		case <-tick:
			c.renewOnce()
		}
	}
}

// nextRenewal says how long to wait before the renewer acts, if it has
// anything to do.
func (c *Client) nextRenewal() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expires.IsZero() || (c.auth.Method == MethodToken && !c.renew) {
		return 0, false
	}
	left := time.Until(c.expires)
	if left <= 0 {
		return 0, false // expired: the next call's 403 logs in again
	}
	return max(left*2/3, time.Second), true
}

func (c *Client) renewOnce() {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	c.mu.Lock()
	gen, ttl, renewable := c.gen.Load(), c.ttl, c.renew
	c.mu.Unlock()

	if renewable {
		s, err := c.api.Auth().Token().RenewSelfWithContext(ctx, int(ttl/time.Second))
		if err == nil && s != nil && s.Auth != nil {
			got := time.Duration(s.Auth.LeaseDuration) * time.Second
			c.mu.Lock()
			if c.gen.Load() == gen {
				c.expires = time.Now().Add(got)
				c.renewals++
				// Shorter than asked: the token's max TTL is near and
				// renewing again cannot extend it.
				c.renew = got >= ttl
			}
			c.mu.Unlock()
			c.log.Debug("vault token renewed", "ttl", got)
			return
		}
		if !isForbidden(err) {
			c.log.Warn("vault token renewal failed; will retry", "err", c.wrap("renew", "auth/token/renew-self", err))
			return
		}
		c.mu.Lock()
		c.renew = false
		c.mu.Unlock()
	}
	if c.auth.Method == MethodToken {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return
	}
	if err := c.loginLocked(ctx); err != nil {
		c.log.Warn("vault login before token expiry failed", "err", err)
	}
}
