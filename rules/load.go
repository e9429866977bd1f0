package rules

import (
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Defaults for keys the file leaves out.
const (
	DefaultListen        = "127.0.0.1:3128"
	DefaultAdmin         = "127.0.0.1:9464"
	DefaultCertCacheSize = 1024
	DefaultCACert        = "./credproxy-ca.pem"
	DefaultCAKey         = "./credproxy-ca-key.pem"
	DefaultJWTFile       = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// DefaultPolicy is the `leases:` block when the file has none.
var DefaultPolicy = Policy{
	DefaultTTL:        15 * time.Minute,
	MaxTTL:            2 * time.Hour,
	AutoRenew:         true,
	RenewBeforeExpiry: 5 * time.Minute,
	IdleTimeout:       10 * time.Minute,
}

// Load reads the config file at path and returns it parsed, defaulted,
// validated and compiled. Problems in the file come back as ConfigErrors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read. path names the file in messages, and
// relative paths in the file are resolved against its directory.
func Parse(path string, data []byte) (*Config, error) {
	l := newLoader(path)
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		l.syntaxError(err, data)
		return nil, l.errs
	}
	c := l.decode(&root)
	l.validate(c)
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	c.Warnings = l.warnings
	c.index = newHostIndex(c.Rules)
	return c, nil
}

// syntaxError turns "yaml: line 3: did not find expected key" into a
// ConfigError at line 3. yaml.v3 names no line for a bad byte or an early
// end of the file: those are placed at the first bad byte, or the last line.
func (l *loader) syntaxError(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		_, msg, _ = strings.Cut(msg, ": ")
	} else {
		line = badByteLine(data)
	}
	l.errs = append(l.errs, &ConfigError{File: l.file, Line: max(line, 1), Msg: "bad YAML: " + msg})
}

// badByteLine is the line of data's first byte that YAML refuses (invalid
// UTF-8 or a control character), else its last line.
func badByteLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 || r < ' ' && r != '\n' && r != '\r' && r != '\t' || r == 0x7f {
			return line
		}
		if r == '\n' && i+1 < len(data) {
			line++
		}
		i += size
	}
	return line
}

func (l *loader) decode(root *yaml.Node) *Config {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	} else if doc.Kind == yaml.DocumentNode || doc.Kind == 0 {
		doc = nil // an empty file: every default, no rules
	}
	f := l.fields(doc, "", "listen", "admin", "identity", "certCacheSize", "ca", "upstream",
		"limits", "unmatched", "audit", "leases", "sources", "credentials", "rules", "clients", "databases",
		"transparent")
	c := &Config{
		Path:          l.file,
		Listen:        l.str(f["listen"], "listen", DefaultListen),
		Identity:      l.str(f["identity"], "identity", ""),
		CertCacheSize: l.integer(f["certCacheSize"], "certCacheSize", DefaultCertCacheSize),
		Unmatched:     Unmatched(l.str(f["unmatched"], "unmatched", string(UnmatchedTunnel))),
	}
	if c.Identity == "" {
		c.Identity = hostname()
	}
	l.admin(f["admin"], c)
	ca := l.fields(f["ca"], "ca", "cert", "key")
	c.CA = CA{Cert: l.filePath(ca["cert"], "ca.cert", DefaultCACert), Key: l.filePath(ca["key"], "ca.key", DefaultCAKey)}
	c.Upstream = l.upstream(f["upstream"])
	c.Limits = l.limits(f["limits"])
	audit := l.fields(f["audit"], "audit", "file")
	c.Audit.File = l.filePath(audit["file"], "audit.file", "")

	leases := l.fields(f["leases"], "leases", "defaultTTL", "maxTTL", "autoRenew", "renewBeforeExpiry", "idleTimeout")
	c.Leases = l.policy(leases, "leases", "defaultTTL", DefaultPolicy)
	c.Sources = l.sources(f["sources"])
	c.Credentials = l.credentials(f["credentials"], c.Leases)
	c.Rules = l.rules(f["rules"])
	c.Clients = l.clients(f["clients"])
	c.Databases = l.databases(f["databases"])
	c.Transparent = l.transparent(f["transparent"])
	return c
}

func hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "credproxy"
}

// policy lays the lease keys in f over base. The `leases:` block spells the
// TTL defaultTTL, a credential spells it ttl.
func (l *loader) policy(f map[string]*yaml.Node, field, ttlKey string, base Policy) Policy {
	p := Policy{
		DefaultTTL:        l.duration(f[ttlKey], join(field, ttlKey), base.DefaultTTL),
		MaxTTL:            l.duration(f["maxTTL"], join(field, "maxTTL"), base.MaxTTL),
		AutoRenew:         l.boolean(f["autoRenew"], join(field, "autoRenew"), base.AutoRenew),
		RenewBeforeExpiry: l.duration(f["renewBeforeExpiry"], join(field, "renewBeforeExpiry"), base.RenewBeforeExpiry),
		IdleTimeout:       l.duration(f["idleTimeout"], join(field, "idleTimeout"), base.IdleTimeout),
	}
	// An inherited renewBeforeExpiry that does not fit a shorter ttl (ttl: 5m
	// under the default 5m) renews at two thirds of the ttl, as Vault's own
	// lifetime watcher does, instead of failing a config that never set it.
	if !l.has(join(field, "renewBeforeExpiry")) && p.DefaultTTL > 0 && p.RenewBeforeExpiry >= p.DefaultTTL {
		p.RenewBeforeExpiry = p.DefaultTTL / 3
	}
	return p
}

func (l *loader) sources(n *yaml.Node) map[string]*Source {
	out := map[string]*Source{}
	for _, e := range l.entries(n, "sources") {
		switch sourceType(e.value) {
		case SourceOAuth2:
			out[e.key] = l.oauth2Source(e)
			continue
		case SourceGitHubApp:
			out[e.key] = l.githubAppSource(e)
			continue
		case SourceExec:
			out[e.key] = l.execSource(e)
			continue
		}
		f := l.fields(e.value, e.field, "type", "address", "namespace", "caFile", "auth")
		s := &Source{
			Name:      e.key,
			Type:      l.str(f["type"], join(e.field, "type"), ""),
			Address:   l.str(f["address"], join(e.field, "address"), os.Getenv("VAULT_ADDR")),
			Namespace: l.str(f["namespace"], join(e.field, "namespace"), ""),
			CAFile:    l.filePath(f["caFile"], join(e.field, "caFile"), ""),
			Line:      l.line(e.field),
		}
		s.Auth = l.sourceAuth(f["auth"], join(e.field, "auth"))
		out[e.key] = s
	}
	return out
}

func (l *loader) sourceAuth(n *yaml.Node, field string) SourceAuth {
	f := l.fields(n, field, "method", "token", "tokenFile", "roleID", "secretIDFile", "role", "jwtFile", "mount")
	a := SourceAuth{
		Method:       l.str(f["method"], join(field, "method"), "token"),
		Token:        l.str(f["token"], join(field, "token"), ""),
		TokenFile:    l.filePath(f["tokenFile"], join(field, "tokenFile"), ""),
		RoleID:       l.str(f["roleID"], join(field, "roleID"), ""),
		SecretIDFile: l.filePath(f["secretIDFile"], join(field, "secretIDFile"), ""),
		Role:         l.str(f["role"], join(field, "role"), ""),
	}
	jwtDefault := ""
	if a.Method == "kubernetes" {
		jwtDefault = DefaultJWTFile
	}
	a.JWTFile = l.filePath(f["jwtFile"], join(field, "jwtFile"), jwtDefault)
	a.Mount = l.str(f["mount"], join(field, "mount"), a.Method)
	return a
}

func (l *loader) credentials(n *yaml.Node, leases Policy) map[string]*Credential {
	out := map[string]*Credential{}
	for _, e := range l.entries(n, "credentials") {
		f := l.fields(e.value, e.field, "source", "env", "file", "path", "field", "scope",
			"ttl", "maxTTL", "autoRenew", "renewBeforeExpiry", "idleTimeout")
		out[e.key] = &Credential{
			Name:   e.key,
			Source: l.str(f["source"], join(e.field, "source"), ""),
			Env:    l.str(f["env"], join(e.field, "env"), ""),
			File:   l.filePath(f["file"], join(e.field, "file"), ""),
			Path:   l.str(f["path"], join(e.field, "path"), ""),
			Field:  l.str(f["field"], join(e.field, "field"), ""),
			Scope:  l.str(f["scope"], join(e.field, "scope"), ScopeShared),
			Policy: l.policy(f, e.field, "ttl", leases),
			Line:   l.line(e.field),
		}
	}
	return out
}

func (l *loader) rules(n *yaml.Node) []*Rule {
	var out []*Rule
	for i, item := range l.items(n, "rules") {
		field := index("rules", i)
		f := l.fields(item, field, "name", "hosts", "paths", "methods", "identities",
			"credential", "purpose", "inject", "sign", "remove", "allowPlaintext")
		inj := l.fields(f["inject"], join(field, "inject"), "header", "query", "value")
		out = append(out, &Rule{
			Name:       l.str(f["name"], join(field, "name"), ""),
			Hosts:      l.strs(f["hosts"], join(field, "hosts")),
			Paths:      l.strs(f["paths"], join(field, "paths")),
			Methods:    l.strs(f["methods"], join(field, "methods")),
			Identities: l.strs(f["identities"], join(field, "identities")),
			Credential: l.str(f["credential"], join(field, "credential"), ""),
			Purpose:    l.str(f["purpose"], join(field, "purpose"), ""),
			Remove:     l.strs(f["remove"], join(field, "remove")),
			Inject: Inject{
				Header: l.str(inj["header"], join(field, "inject.header"), ""),
				Query:  l.str(inj["query"], join(field, "inject.query"), ""),
				Value:  l.str(inj["value"], join(field, "inject.value"), ""),
			},
			Sign:           l.sign(f["sign"], join(field, "sign")),
			AllowPlaintext: l.boolean(f["allowPlaintext"], join(field, "allowPlaintext"), false),
			Line:           item.Line,
		})
	}
	return out
}
