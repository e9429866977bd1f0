package rules

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// validate checks a decoded Config and compiles its rules. Every problem is
// recorded, so one run of `credproxy check` shows them all.
func (l *loader) validate(c *Config) {
	l.checkListen(c.Listen, "listen")
	l.checkAdmin(c)
	if c.CertCacheSize <= 0 {
		l.errf("certCacheSize", "must be greater than 0, not %d", c.CertCacheSize)
	}
	if c.Unmatched != UnmatchedTunnel && c.Unmatched != UnmatchedDeny {
		l.errf("unmatched", "must be tunnel or deny, not %q", c.Unmatched)
	}
	for i, f := range c.Upstream.CAFiles {
		if _, err := os.Stat(f); err != nil {
			l.errf(index("upstream.caFiles", i), "%v", err)
		}
	}
	l.checkLimits(c)
	l.checkPolicy(c.Leases, "leases", "defaultTTL")
	for _, name := range inFileOrder(c.Sources, func(s *Source) int { return s.Line }) {
		l.checkSource(c.Sources[name])
	}
	for _, name := range inFileOrder(c.Credentials, func(cr *Credential) int { return cr.Line }) {
		l.checkCredential(c, c.Credentials[name])
	}
	l.checkRules(c)
	l.checkClients(c)
	l.checkDatabases(c)
	l.checkTransparent(c)
}

// inFileOrder lists m's keys by line, so that warnings come out in file order.
func inFileOrder[V any](m map[string]V, line func(V) int) []string {
	keys := sortedKeys(m)
	sort.SliceStable(keys, func(i, j int) bool { return line(m[keys[i]]) < line(m[keys[j]]) })
	return keys
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (l *loader) checkListen(addr, field string) {
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port != "0" {
		_, err = parsePort(port)
	}
	if err != nil {
		l.errf(field, "want host:port, as in 127.0.0.1:3128: %v", err)
	}
}

// checkPolicy checks one effective lease policy. A relation that fails is
// blamed on the key written at this level; when neither key is, the value
// came from `leases:` and is reported there.
func (l *loader) checkPolicy(p Policy, field, ttlKey string) {
	set := func(key string) bool { return l.has(join(field, key)) }
	durations := []struct {
		key string
		d   time.Duration
	}{{ttlKey, p.DefaultTTL}, {"maxTTL", p.MaxTTL}, {"renewBeforeExpiry", p.RenewBeforeExpiry}, {"idleTimeout", p.IdleTimeout}}
	positive := true
	for _, x := range durations {
		if x.d <= 0 {
			positive = false
			if set(x.key) {
				l.errf(join(field, x.key), "must be positive, not %v", x.d)
			}
		}
	}
	if !positive {
		return
	}
	from := func(key string) string {
		if set(key) || field == "leases" {
			return ""
		}
		return " (from leases)"
	}
	if p.RenewBeforeExpiry >= p.DefaultTTL && (set("renewBeforeExpiry") || set(ttlKey)) {
		blame := "renewBeforeExpiry"
		if !set(blame) {
			blame = ttlKey
		}
		l.errf(join(field, blame), "renewBeforeExpiry %v%s must be shorter than %s %v%s",
			p.RenewBeforeExpiry, from("renewBeforeExpiry"), ttlKey, p.DefaultTTL, from(ttlKey))
	}
	if p.DefaultTTL > p.MaxTTL && (set(ttlKey) || set("maxTTL")) {
		blame := ttlKey
		if !set(blame) {
			blame = "maxTTL"
		}
		l.errf(join(field, blame), "%s %v%s exceeds maxTTL %v%s",
			ttlKey, p.DefaultTTL, from(ttlKey), p.MaxTTL, from("maxTTL"))
	}
}

func (l *loader) checkSource(s *Source) {
	field := join("sources", s.Name)
	if s.Name == "env" || s.Name == "file" {
		l.errf(field, "%q is a built-in source; choose another name", s.Name)
	}
	switch s.Type {
	case SourceOAuth2:
		l.checkOAuth2Source(s)
		return
	case SourceGitHubApp:
		l.checkGitHubAppSource(s, field)
		return
	case SourceExec:
		l.checkExecSource(s, field)
		return
	case "vault":
	default:
		l.errf(join(field, "type"), "must be vault, oauth2, github_app or exec, not %q", s.Type)
	}
	if s.Address == "" {
		l.errf(join(field, "address"), "required (or set VAULT_ADDR)")
	} else if u, err := url.Parse(s.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.errf(join(field, "address"), "want an http:// or https:// URL, not %q", s.Address)
	}
	auth := join(field, "auth")
	a := s.Auth
	switch a.Method {
	case "token":
	case "approle":
		if a.RoleID == "" {
			l.errf(join(auth, "roleID"), "required for method approle")
		}
		if a.SecretIDFile == "" {
			l.errf(join(auth, "secretIDFile"), "required for method approle")
		}
	case "kubernetes":
		if a.Role == "" {
			l.errf(join(auth, "role"), "required for method kubernetes")
		}
	default:
		l.errf(join(auth, "method"), "must be token, approle or kubernetes, not %q", a.Method)
	}
}

func (l *loader) checkCredential(c *Config, cr *Credential) {
	field := join("credentials", cr.Name)
	// only reports a key that belongs to another kind of source.
	only := func(key, value, kind string) {
		if value != "" {
			l.errf(join(field, key), "only applies to %s", kind)
		}
	}
	const store = "a store source (one of sources:)"
	switch cr.Source {
	case "env":
		l.checkEnv(cr, field)
		only("file", cr.File, "source file")
		only("path", cr.Path, store)
		only("field", cr.Field, store)
	case "file":
		l.checkFile(cr, field)
		only("env", cr.Env, "source env")
		only("path", cr.Path, store)
		only("field", cr.Field, store)
	default:
		if _, ok := c.Sources[cr.Source]; !ok {
			choices := strings.Join(append([]string{"env", "file"}, sortedKeys(c.Sources)...), ", ")
			if cr.Source == "" {
				l.errf(join(field, "source"), "required: want %s", choices)
			} else {
				l.errf(join(field, "source"), "unknown source %q: want %s", cr.Source, choices)
			}
			break
		}
		switch c.Sources[cr.Source].Type {
		case SourceGitHubApp: // each of these reports env and file itself
			l.checkGitHubAppCredential(cr, field)
		case SourceExec:
			l.checkExecCredential(cr, field)
		case SourceOAuth2:
			l.checkOAuth2Credential(cr, field)
			only("env", cr.Env, "source env")
			only("file", cr.File, "source file")
		default:
			if cr.Path == "" {
				l.errf(join(field, "path"), "required for source %s", cr.Source)
			}
			only("env", cr.Env, "source env")
			only("file", cr.File, "source file")
		}
	}
	if cr.Scope != ScopeShared && cr.Scope != ScopeIdentity && cr.Scope != ScopeTask {
		l.errf(join(field, "scope"), "must be shared, identity or task, not %q", cr.Scope)
	}
	l.checkPolicy(cr.Policy, field, "ttl")
}

// checkEnv and checkFile only warn when the secret is missing or empty: it
// may appear before the first request, and the rule answers 502 until it
// does. A value that is there but short is an error: the proxy masks echoes
// of the value in responses, and masking a few bytes mangles bodies.
func (l *loader) checkEnv(cr *Credential, field string) {
	if cr.Env == "" {
		l.errf(join(field, "env"), "required for source env")
		return
	}
	switch v, ok := os.LookupEnv(cr.Env); {
	case !ok:
		l.warnf(join(field, "env"), "credential %q: environment variable %s is not set", cr.Name, cr.Env)
	case v == "":
		l.warnf(join(field, "env"), "credential %q: environment variable %s is empty", cr.Name, cr.Env)
	case len(v) < MinSecretBytes:
		l.errf(join(field, "env"), "credential %q: the value of %s is %d bytes, %s", cr.Name, cr.Env, len(v), tooShort)
	}
}

// MinSecretBytes is the shortest env or file credential accepted.
const MinSecretBytes = 8

var tooShort = fmt.Sprintf("too short to mask safely in responses (want at least %d)", MinSecretBytes)

func (l *loader) checkFile(cr *Credential, field string) {
	if cr.File == "" {
		l.errf(join(field, "file"), "required for source file")
		return
	}
	b, err := readSmallFile(cr.File, 1<<20)
	if err != nil {
		l.warnf(join(field, "file"), "credential %q: cannot read file %s: %v", cr.Name, cr.File, err)
		return
	}
	// As lease/static reads it: the value is the file without its line end.
	if v := strings.TrimRight(string(b), "\r\n"); v != "" && len(v) < MinSecretBytes {
		l.errf(join(field, "file"), "credential %q: the value in %s is %d bytes, %s", cr.Name, cr.File, len(v), tooShort)
	}
}

func (l *loader) checkRules(c *Config) {
	names := map[string]int{}
	for i, r := range c.Rules {
		field := index("rules", i)
		switch first, dup := names[r.Name]; {
		case r.Name == "":
			l.errf(join(field, "name"), "required")
		case dup:
			l.errf(join(field, "name"), "duplicate rule name %q (first at line %d)", r.Name, first)
		default:
			names[r.Name] = r.Line
		}
		switch _, ok := c.Credentials[r.Credential]; {
		case r.Credential == "":
			l.errf(join(field, "credential"), "required")
		case !ok:
			l.errf(join(field, "credential"), "unknown credential %q", r.Credential)
		}
		l.compileRule(r, field)
	}
}

// compileRule checks and compiles a rule's patterns and injection.
func (l *loader) compileRule(r *Rule, field string) {
	if len(r.Hosts) == 0 {
		l.errf(join(field, "hosts"), "required: at least one host")
	}
	for j, h := range r.Hosts {
		p, err := parseHostPattern(h)
		if err != nil {
			l.errf(index(join(field, "hosts"), j), "bad host pattern %q: %v", h, err)
		}
		r.hosts = append(r.hosts, p)
		if r.AllowPlaintext && err == nil && !p.loopback() {
			l.errf(join(field, "allowPlaintext"), "only for loopback hosts (localhost, 127.0.0.0/8, ::1): hosts[%d] %q is not one", j, h)
		}
	}
	for j, s := range r.Paths {
		p, err := parsePathPattern(s)
		if err != nil {
			l.errf(index(join(field, "paths"), j), "bad path %q: %v", s, err)
		}
		r.paths = append(r.paths, p)
	}
	for j, m := range r.Methods {
		if !isToken(m) {
			l.errf(index(join(field, "methods"), j), "bad method %q", m)
		}
		r.Methods[j] = strings.ToUpper(m)
	}
	for j, id := range r.Identities {
		if id == "" {
			l.errf(index(join(field, "identities"), j), "empty identity")
		}
	}
	for j, h := range r.Remove {
		if !isToken(h) {
			l.errf(index(join(field, "remove"), j), "bad header name %q", h)
		}
		r.Remove[j] = http.CanonicalHeaderKey(h)
	}
	if !l.compileSign(r, field) {
		l.compileInject(r, join(field, "inject"))
	}
}

// Headers that net/http sets itself or that are hop-by-hop: a value injected
// there would be dropped or would corrupt the request's framing.
var reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection",
	"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Upgrade"}

func (l *loader) compileInject(r *Rule, field string) {
	in := &r.Inject
	switch {
	case in.Header == "" && in.Query == "":
		l.errf(field, "needs one of header or query")
	case in.Header != "" && in.Query != "":
		l.errf(join(field, "query"), "set header or query, not both")
	case in.Header != "":
		in.Header = http.CanonicalHeaderKey(in.Header)
		if !isToken(in.Header) {
			l.errf(join(field, "header"), "bad header name %q", in.Header)
		} else if contains(reservedHeaders, in.Header) {
			l.errf(join(field, "header"), "cannot inject %s: it is managed by HTTP itself", in.Header)
		}
		r.injector = headerInjector{name: in.Header}
	default:
		r.injector = queryInjector{param: in.Query}
	}
	if in.Value == "" {
		l.errf(join(field, "value"), "required: a template such as \"Bearer {{ .Value }}\"")
		return
	}
	t, err := parseValueTemplate(r.Name, in.Value)
	if err != nil {
		l.errf(join(field, "value"), "bad template: %v", err)
		return
	}
	r.value = t
}

// isToken reports whether s is an RFC 9110 token, the syntax of header names
// and methods.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
