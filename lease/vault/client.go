// Package vault is the HashiCorp Vault source: one Client per `sources:` entry
// (address, namespace, TLS and login), and one lease.Source per credential
// that reads a KV v1/v2 secret or a dynamic secret such as database/creds/x.
// It owns the Vault token's lifetime (lazy login, renew-self, re-login); it
// does not schedule grant renewals, which is the lease.Manager's job.
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
)

// Config is one `sources:` entry of type vault.
type Config struct {
	// Address is e.g. https://vault.internal:8200. Like the vault CLI, the
	// client also honours $VAULT_ADDR (when Address is ""), $VAULT_CACERT,
	// $VAULT_MAX_RETRIES and the other VAULT_* client variables.
	Address   string
	Namespace string // Vault Enterprise namespace; "" means none (or $VAULT_NAMESPACE)
	CAFile    string // PEM bundle to verify Vault's certificate; "" means system roots
	Auth      Auth
	Logger    *slog.Logger // nil discards
	// HTTPClient replaces the client's transport (tests, custom proxies). It
	// cannot be combined with CAFile: configure its TLS yourself.
	HTTPClient *http.Client
}

// Auth says how the Client logs in.
type Auth struct {
	Method string // token (default), approle or kubernetes

	// token: Token, else TokenFile (re-read when Vault rejects the token, so
	// an agent that rotates it is followed), else $VAULT_TOKEN.
	Token     string
	TokenFile string

	// approle: RoleID and a file holding the secret ID.
	RoleID       string
	SecretIDFile string

	// kubernetes: Role, and JWTFile (default: the pod's service account token).
	Role    string
	JWTFile string

	// Mount is the auth method's mount path (default: approle or kubernetes).
	Mount string
}

// Auth methods.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

const defaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Client is a logged-in (lazily) connection to one Vault, shared by every
// credential that names its source. It is safe for concurrent use.
type Client struct {
	api  *api.Client
	auth Auth
	log  *slog.Logger

	gen   atomic.Uint64 // bumped on every new token; 0 means never logged in
	tries atomic.Uint64 // finished first-login attempts; see ensureLogin

	// mu serialises logins and guards the token state below.
	mu       sync.Mutex
	expires  time.Time // token expiry; zero when it never expires
	ttl      time.Duration
	renew    bool  // the token is renewable
	logins   int   // successful logins, for tests
	renewals int   // successful renew-self calls, for tests
	loginErr error // the last first-login attempt's error

	// secrets are the login secrets this client has sent (tokens, the
	// secret ID, the JWT), newest last; scrub masks them in Vault's error
	// text. Guarded by smu, not mu: errors are wrapped while mu is held.
	smu     sync.Mutex
	secrets []string
	scrub   atomic.Pointer[secret.Scrubber]

	wake      chan struct{} // tells the renewer a new token arrived
	ctx       context.Context
	cancel    context.CancelFunc // stops the renewer
	done      chan struct{}      // closed when the renewer has stopped
	startOnce sync.Once
	started   bool // set inside startOnce
	closeOnce sync.Once
}

// NewClient checks cfg and builds a Client. It does not contact Vault: the
// first Acquire logs in, so a Vault that is down at start only delays leases.
func NewClient(cfg Config) (*Client, error) {
	a, err := checkAuth(cfg.Auth)
	if err != nil {
		return nil, err
	}
	conf := api.DefaultConfig()
	if conf.Error != nil {
		return nil, fmt.Errorf("vault: client config: %w", conf.Error)
	}
	if cfg.Address != "" {
		conf.Address = cfg.Address
	}
	switch {
	case cfg.HTTPClient != nil && cfg.CAFile != "":
		return nil, errors.New("vault: set caFile or an HTTP client, not both")
	case cfg.HTTPClient != nil:
		conf.HttpClient = cfg.HTTPClient
	case cfg.CAFile != "":
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: cfg.CAFile}); err != nil {
			return nil, fmt.Errorf("vault: caFile %s: %w", cfg.CAFile, err)
		}
	}
	ac, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault: client for %s: %w", conf.Address, err)
	}
	// api.NewClient picks up $VAULT_TOKEN by itself; we set the token only
	// when logging in so that "logged in" has one meaning.
	ac.ClearToken()
	if cfg.Namespace != "" {
		ac.SetNamespace(cfg.Namespace)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		api:    ac,
		auth:   a,
		log:    log.With("vault_addr", ac.Address()), // the caller names the source
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}, nil
}

// checkAuth fills defaults and rejects incomplete auth settings.
func checkAuth(a Auth) (Auth, error) {
	switch a.Method {
	case "", MethodToken:
		a.Method = MethodToken
		if a.Token == "" && a.TokenFile == "" && os.Getenv(api.EnvVaultToken) == "" {
			return a, errors.New("vault: auth method token needs token, tokenFile or $VAULT_TOKEN")
		}
	case MethodAppRole:
		if a.RoleID == "" || a.SecretIDFile == "" {
			return a, errors.New("vault: auth method approle needs roleID and secretIDFile")
		}
		if a.Mount == "" {
			a.Mount = "approle"
		}
	case MethodKubernetes:
		if a.Role == "" {
			return a, errors.New("vault: auth method kubernetes needs role")
		}
		if a.JWTFile == "" {
			a.JWTFile = defaultJWTFile
		}
		if a.Mount == "" {
			a.Mount = "kubernetes"
		}
	default:
		return a, fmt.Errorf("vault: unknown auth method %q (want token, approle or kubernetes)", a.Method)
	}
	return a, nil
}

// Source returns the lease.Source for one credential. path is the Vault API
// path (secret/data/openai for KV v2, kv/openai for KV v1, database/creds/ro
// for a dynamic secret); field picks the value among the secret's fields and
// may be empty when the secret has exactly one.
func (c *Client) Source(path, field string) lease.Source {
	return &source{c: c, path: path, field: field}
}

// Close stops the token renewer. It does not revoke the token: dynamic
// leases created with it would be revoked too, and the manager revokes its
// own leases before closing sources.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		// After this Do no renewer can start, and one that did is visible.
		c.startOnce.Do(func() {})
		if c.started {
			<-c.done
		}
	})
}

// maxSecrets bounds the login secrets remembered for masking: the current
// ones and a few that were replaced (a request in flight may still carry one).
const maxSecrets = 8

// remember adds login secrets to those masked in Vault's error text.
func (c *Client) remember(vals ...string) {
	c.smu.Lock()
	defer c.smu.Unlock()
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(c.secrets, v) {
			c.secrets = append(c.secrets, v)
		}
	}
	if n := len(c.secrets); n > maxSecrets {
		c.secrets = slices.Delete(c.secrets, 0, n-maxSecrets)
	}
	c.scrub.Store(secret.NewScrubber(c.secrets...))
}

// wrap is wrapErr with this client's login secrets masked.
func (c *Client) wrap(op, path string, err error) error {
	return wrapErr(op, path, err, c.scrub.Load())
}

// scrubErr masks this client's login secrets in the text of an error that
// did not come through wrap (say, a warning quoted from a 200 response).
func (c *Client) scrubErr(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(c.scrub.Load().String(err.Error()))
}
