package rules

import (
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// SSL modes of a database's upstream connection, named as libpq names them.
const (
	SSLDisable    = "disable"     // plain TCP: the login crosses the network in the clear
	SSLRequire    = "require"     // TLS verified (chain and host name) against caFile alone, which it requires
	SSLVerifyFull = "verify-full" // TLS, chain (system roots + caFile) and host name verified
)

// DefaultPGPort is an upstream's port when the file names none.
const DefaultPGPort = 5432

// Database is one entry of `databases:`: a local PostgreSQL listener whose
// agents log in without a password; credproxy logs in upstream with a lease
// of Credential (its username and password fields, or Upstream.User and the
// value).
type Database struct {
	Name       string
	Listen     string // host:port the agents connect to
	Upstream   DBUpstream
	Credential string   // key of Config.Credentials
	Identities []string // empty: every identity
	Purpose    string   // free text for the audit trail
	Line       int
}

// DBUpstream is where a Database's connections go.
type DBUpstream struct {
	Host     string
	Port     int
	Database string // the database every connection opens, whatever the agent asks
	// User is the login name when the credential's lease has no username
	// field (an env or file credential holds only a password).
	User    string
	SSLMode string // SSLDisable, SSLRequire or SSLVerifyFull (the default)
	CAFile  string // extra root for verifying the server; absolute
}

// Addr is the upstream's host:port.
func (u DBUpstream) Addr() string { return net.JoinHostPort(u.Host, strconv.Itoa(u.Port)) }

func (l *loader) databases(n *yaml.Node) []*Database {
	var out []*Database
	for i, item := range l.items(n, "databases") {
		field := index("databases", i)
		f := l.fields(item, field, "name", "listen", "upstream", "credential", "identities", "purpose")
		up := join(field, "upstream")
		u := l.fields(f["upstream"], up, "host", "port", "database", "user", "sslmode", "caFile")
		out = append(out, &Database{
			Name:       l.str(f["name"], join(field, "name"), ""),
			Listen:     l.str(f["listen"], join(field, "listen"), ""),
			Credential: l.str(f["credential"], join(field, "credential"), ""),
			Identities: l.strs(f["identities"], join(field, "identities")),
			Purpose:    l.str(f["purpose"], join(field, "purpose"), ""),
			Upstream: DBUpstream{
				Host:     l.str(u["host"], join(up, "host"), ""),
				Port:     l.integer(u["port"], join(up, "port"), DefaultPGPort),
				Database: l.str(u["database"], join(up, "database"), ""),
				User:     l.str(u["user"], join(up, "user"), ""),
				SSLMode:  l.str(u["sslmode"], join(up, "sslmode"), SSLVerifyFull),
				CAFile:   l.filePath(u["caFile"], join(up, "caFile"), ""),
			},
			Line: item.Line,
		})
	}
	return out
}

// checkDatabases checks every `databases:` entry; errors name file:line: field.
func (l *loader) checkDatabases(c *Config) {
	names, listens := map[string]int{}, map[string]int{}
	clients := map[string]bool{}
	for _, cl := range c.Clients {
		clients[cl.Name] = true
	}
	for i, d := range c.Databases {
		field := index("databases", i)
		switch first, dup := names[d.Name]; {
		case d.Name == "":
			l.errf(join(field, "name"), "required")
		case !isClientName(d.Name):
			l.errf(join(field, "name"), "bad database name %q: use letters, digits, '.', '_' and '-'", d.Name)
		case dup:
			l.errf(join(field, "name"), "duplicate database name %q (first at line %d)", d.Name, first)
		default:
			names[d.Name] = d.Line
		}
		switch first, dup := listens[d.Listen]; {
		case d.Listen == "":
			l.errf(join(field, "listen"), "required: the address agents connect to, as in 127.0.0.1:5433")
		case dup:
			l.errf(join(field, "listen"), "%s is already the listen address of the database at line %d", d.Listen, first)
		case d.Listen == c.Listen || d.Listen == c.Admin:
			l.errf(join(field, "listen"), "%s is already credproxy's proxy or admin listener", d.Listen)
		default:
			listens[d.Listen] = d.Line
			l.checkListen(d.Listen, join(field, "listen"))
			if host, _, err := net.SplitHostPort(d.Listen); err == nil && !isLoopback(host) && len(clients) == 0 {
				// Without clients: a connection needs no password at all.
				l.warnf(join(field, "listen"), "database %q listens on %s, not loopback, and clients: is not set: whoever can reach it is logged in to %s without a password", d.Name, d.Listen, d.Upstream.Database)
			}
		}
		l.checkDBUpstream(d.Upstream, join(field, "upstream"))
		l.checkDBCredential(c, d, field)
		if len(clients) == 0 && len(d.Identities) > 0 && !slices.Contains(d.Identities, c.Identity) {
			l.warnf(join(field, "identities"), "database %q: without clients: every agent is identity %q, which is not listed: no agent can connect", d.Name, c.Identity)
		}
		for j, id := range d.Identities {
			if len(clients) > 0 && !clients[id] {
				l.errf(index(join(field, "identities"), j),
					"unknown client %q: with clients set, identities must name clients (%s)", id, strings.Join(sortedKeys(clients), ", "))
			}
		}
	}
}

func (l *loader) checkDBUpstream(u DBUpstream, field string) {
	if u.Host == "" {
		l.errf(join(field, "host"), "required")
	}
	if u.Port < 1 || u.Port > 65535 {
		l.errf(join(field, "port"), "port %d out of range 1-65535", u.Port)
	}
	if u.Database == "" {
		l.errf(join(field, "database"), "required: the database every connection opens")
	}
	switch u.SSLMode {
	case SSLDisable:
		if u.CAFile != "" {
			l.errf(join(field, "caFile"), "only applies to sslmode require or verify-full")
		}
		if u.Host != "" && !isLoopback(u.Host) {
			// The leased login would cross the network in the clear: a
			// credential only leaves over TLS that credproxy verified.
			l.errf(join(field, "sslmode"), "disable is only for a loopback upstream: to %s the login would cross the network unencrypted; use verify-full", u.Host)
		}
	case SSLRequire:
		if u.CAFile == "" {
			// Upstream TLS is always verified: require trusts caFile
			// alone, so it needs one.
			l.errf(join(field, "caFile"), "required with sslmode require (the server is verified against it alone); or use verify-full")
		}
	case SSLVerifyFull:
	default:
		l.errf(join(field, "sslmode"), "must be disable, require or verify-full, not %q", u.SSLMode)
	}
	if u.CAFile != "" {
		if _, err := os.Stat(u.CAFile); err != nil {
			l.errf(join(field, "caFile"), "%v", err)
		}
	}
}

// checkDBCredential: the credential must exist; one holding a single value
// (env, file) needs upstream.user for the login name.
func (l *loader) checkDBCredential(c *Config, d *Database, field string) {
	cr, ok := c.Credentials[d.Credential]
	switch {
	case d.Credential == "":
		l.errf(join(field, "credential"), "required")
	case !ok:
		l.errf(join(field, "credential"), "unknown credential %q", d.Credential)
	case (cr.Source == "env" || cr.Source == "file") && d.Upstream.User == "":
		l.errf(join(field, "upstream.user"), "required: credential %q (source %s) holds only a password", d.Credential, cr.Source)
	}
}
