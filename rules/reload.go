package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
)

// A reload builds a new *Config with Load and swaps it in whole. Most of it
// applies at once; what credproxy only reads at start does not, and
// RestartOnly says which of those changed.

// CredentialDefinition is a digest of everything that makes credential name
// what it is: its own keys (source, env, file, path, field, scope, lease
// policy) and the config of the `sources:` entry it names. Two configs give
// the same digest for a credential exactly when a lease of one is good for
// the other. It is "" when there is no such credential. Line numbers do not
// count: moving a credential in the file changes nothing.
func (c *Config) CredentialDefinition(name string) string {
	cr := c.Credentials[name]
	if cr == nil {
		return ""
	}
	own := *cr
	own.Line = 0
	return digest(struct {
		Credential *Credential
		Source     *Source
	}{&own, c.sourceWithoutLine(cr.Source)})
}

// SourceDefinition is the same for the `sources:` entry name: equal digests
// mean a client built for one serves the other. "" when there is none.
func (c *Config) SourceDefinition(name string) string {
	s := c.sourceWithoutLine(name)
	if s == nil {
		return ""
	}
	return digest(s)
}

func (c *Config) sourceWithoutLine(name string) *Source {
	s := c.Sources[name]
	if s == nil {
		return nil
	}
	cp := *s
	cp.Line = 0
	return &cp
}

func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // only plain values inside: cannot happen
		panic("rules: definition digest: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// RestartOnly copies into loaded the settings a running credproxy took at
// start and cannot change, from running, and names those whose value
// differed: listen, admin (its listener and token file), ca, upstream,
// limits, certCacheSize, audit, databases and transparent (their listeners
// run from start).
// loaded must not be in use yet. Everything else (rules, credentials,
// sources, clients, identity, unmatched, leases) is the new file's. A kept
// database whose credential loaded no longer has is an error: its listener
// would have nothing to log in with.
func RestartOnly(running, loaded *Config) ([]string, error) {
	var changed []string
	keep := func(name string, same bool, restore func()) {
		if !same {
			changed = append(changed, name)
			restore()
		}
	}
	keep("listen", running.Listen == loaded.Listen, func() { loaded.Listen = running.Listen })
	keep("admin", running.Admin == loaded.Admin && running.AdminTokenFile == loaded.AdminTokenFile, func() {
		loaded.Admin, loaded.AdminTokenFile = running.Admin, running.AdminTokenFile
	})
	keep("ca", running.CA == loaded.CA, func() { loaded.CA = running.CA })
	keep("upstream", reflect.DeepEqual(running.Upstream, loaded.Upstream), func() { loaded.Upstream = running.Upstream })
	keep("limits", running.Limits == loaded.Limits, func() { loaded.Limits = running.Limits })
	keep("certCacheSize", running.CertCacheSize == loaded.CertCacheSize, func() { loaded.CertCacheSize = running.CertCacheSize })
	keep("audit", running.Audit == loaded.Audit, func() { loaded.Audit = running.Audit })
	keep("databases", reflect.DeepEqual(dbsWithoutLines(running.Databases), dbsWithoutLines(loaded.Databases)),
		func() { loaded.Databases = running.Databases })
	keep("transparent", reflect.DeepEqual(running.Transparent, loaded.Transparent),
		func() { loaded.Transparent = running.Transparent })
	if loaded.Transparent.Enabled() && loaded.RequiresAuth() {
		// The running transparent listener would serve its redirected
		// connections as the fixed identity, around the clients' tokens.
		return changed, fmt.Errorf("%s: clients: cannot be set while the transparent listener %s runs (a restart applies a change to transparent)",
			loaded.Path, loaded.Transparent.Listen)
	}
	for _, d := range loaded.Databases {
		if loaded.Credentials[d.Credential] == nil {
			return changed, fmt.Errorf("%s: databases.%s.credential: %q is gone from the new file, but the running listener %s uses it (a restart applies a change to databases)",
				loaded.Path, d.Name, d.Credential, d.Listen)
		}
	}
	return changed, nil
}

// dbsWithoutLines is dbs with their line numbers zeroed, to compare configs.
func dbsWithoutLines(dbs []*Database) []Database {
	out := make([]Database, len(dbs))
	for i, d := range dbs {
		out[i] = *d
		out[i].Line = 0
	}
	return out
}
