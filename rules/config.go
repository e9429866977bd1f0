// Package rules owns credproxy's config file: parsing with line numbers,
// defaults, validation, host/path/method matching and injection templates.
// Load returns a fully defaulted, validated, compiled *Config; a running proxy
// never sees an unvalidated one. It knows nothing of HTTP servers or leases.
package rules

import (
	"time"
)

// Unmatched says what happens to a CONNECT that no rule could match.
type Unmatched string

const (
	UnmatchedTunnel Unmatched = "tunnel" // pass through untouched, no MITM
	UnmatchedDeny   Unmatched = "deny"   // refuse with 403
)

// Config is one loaded, validated rules file. Treat it as immutable: a reload
// builds a new *Config and swaps the pointer.
type Config struct {
	Path string // the file it was loaded from, for messages

	Listen string // proxy listener, default 127.0.0.1:3128
	Admin  string // admin listener (/metrics, /healthz, /leases), default 127.0.0.1:9464
	// AdminTokenFile holds the admin API's bearer token (`admin: {tokenFile:}`),
	// absolute; "" when none is set. Read it with AdminToken.
	AdminTokenFile string
	Identity       string // fixed sidecar identity, default the hostname; unused with Clients
	CertCacheSize  int    // leaf certificates kept, default 1024
	Unmatched      Unmatched
	CA             CA
	Upstream       Upstream
	Limits         Limits // the `limits:` block after defaults
	Leases         Policy // the `leases:` block after defaults
	Audit          Audit
	Transparent    Transparent // the `transparent:` block (transparent.go); off when absent

	Sources     map[string]*Source     // `sources:` by name
	Credentials map[string]*Credential // `credentials:` by name
	Rules       []*Rule                // in file order; first match wins
	// Clients are the agents that authenticate to the proxy (`clients:`), in
	// file order. When set, every request must carry Proxy-Authorization and
	// its client's name is the identity; when empty, Identity is.
	Clients []*Client
	// Databases are the PostgreSQL listeners (`databases:`), in file order.
	Databases []*Database

	// Warnings are problems that do not stop a start, such as a credential
	// whose env var is not set: its rule then answers 502 naming it.
	Warnings []string

	index hostIndex // rules by host, built once by Parse
}

// CA names the PEM files of the local CA that signs MITM leaves.
type CA struct {
	Cert string
	Key  string
}

// Upstream configures how credproxy verifies the servers it forwards to.
type Upstream struct {
	CAFiles []string // extra roots, added to the system pool; verification is never off
	// HTTP2 lets credproxy speak HTTP/2 to upstreams that offer it (default
	// true). HTTP/1.1 costs credproxy less CPU per request on a busy host;
	// HTTP/2 needs fewer connections. docs/benchmarks.md has the numbers.
	HTTP2 bool

	DialTimeout           time.Duration // to connect to an upstream (TCP and TLS), default 10s
	ResponseHeaderTimeout time.Duration // from request sent to response headers, default 5m
	StreamWindow          int           // bytes buffered per upstream HTTP/2 stream, default 256 KiB
	// ConnectTo dials another address for a destination, keeping its name
	// for TLS verification, like curl's --connect-to: "host:port" →
	// "ip:port". For tests that run fake upstreams on real API names, and
	// split-horizon networks. Keys are normalised Dest strings.
	ConnectTo map[string]string
}

// Audit says where lease events go.
type Audit struct {
	File string // "" means stdout
}

// Policy is a lease policy: the `leases:` block, or a credential's effective
// copy of it after its own overrides.
type Policy struct {
	DefaultTTL        time.Duration // TTL asked for (a credential's `ttl`)
	MaxTTL            time.Duration
	AutoRenew         bool
	RenewBeforeExpiry time.Duration
	IdleTimeout       time.Duration
}

// Source is a named secret store from `sources:`.
type Source struct {
	Name      string
	Type      string // "vault", "oauth2", "github_app" or "exec"
	Address   string // default $VAULT_ADDR
	Namespace string
	CAFile    string
	Auth      SourceAuth
	OAuth2    *OAuth2Source // type oauth2 (source_oauth2.go)
	GitHubApp *GitHubApp    // type github_app only (source_githubapp.go)
	Exec      *ExecSource   // type exec only (source_exec.go)
	Line      int
}

// SourceAuth is how credproxy logs in to a Source.
type SourceAuth struct {
	Method       string // token | approle | kubernetes
	Token        string // token: literal (discouraged), else TokenFile, else $VAULT_TOKEN
	TokenFile    string
	RoleID       string // approle
	SecretIDFile string // approle
	Role         string // kubernetes
	JWTFile      string // kubernetes, default /var/run/secrets/kubernetes.io/serviceaccount/token
	Mount        string // auth mount path, default the method name
}

// Credential is one entry of `credentials:`.
type Credential struct {
	Name   string
	Source string // "env", "file", or the name of a `sources:` entry
	Env    string // source env: the variable
	File   string // source file: the path
	Path   string // store sources: the secret path
	Field  string // store sources: the field that is .Value (default the only field)
	Scope  string // "shared" (default: one lease for the proxy), "identity" or "task"
	Policy Policy // effective policy: `leases:` overridden by this credential's keys
	Line   int
}

// Rule is one entry of `rules:`. Its exported fields are the file's values
// after normalisation; matching and injection use the compiled forms, so a
// Rule is only usable when it comes from Load or Parse.
type Rule struct {
	Name       string
	Hosts      []string // patterns as written
	Paths      []string // empty: every path
	Methods    []string // upper case; empty: every method
	Identities []string // empty: every identity
	Credential string   // key of Config.Credentials
	Purpose    string   // free text for the audit trail
	Inject     Inject
	Sign       *Sign    // set instead of Inject: the request is signed with the credential
	Remove     []string // canonical header names deleted before injecting
	// AllowPlaintext lets the credential go out over plain HTTP. Only a rule
	// whose hosts are all loopback may set it: anywhere else it is readable
	// on the network.
	AllowPlaintext bool
	Line           int

	index    int // position in Config.Rules
	hosts    []hostPattern
	paths    []pathPattern
	value    *valueTemplate
	injector injector
}

// Inject is a rule's `inject:` block: exactly one of Header and Query is set.
type Inject struct {
	Header string // canonical header name whose value is replaced
	Query  string // query parameter whose value is replaced
	Value  string // text/template source with .Value, .Data and basic
}

// Scope values for Credential.Scope.
const (
	ScopeShared   = "shared"
	ScopeIdentity = "identity"
	// ScopeTask: one lease per task (begun and ended through the control
	// API); a request for the credential must run in an open task.
	ScopeTask = "task"
)
