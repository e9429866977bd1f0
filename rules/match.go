package rules

import (
	"fmt"
	"strings"
)

// Intercepts reports whether some rule's host pattern and port match d,
// whatever the path, method or identity: the proxy then terminates TLS for
// d instead of tunnelling it.
func (c *Config) Intercepts(d Dest) bool {
	found := false
	c.index.each(d.Host, func(r *Rule) bool {
		found = found || r.matchesHost(d)
		return !found
	})
	return found
}

// Match returns the first rule, in file order, that matches the destination,
// method, request path and identity; nil when none does.
//
// rawPath is the path exactly as it is forwarded (req.URL.EscapedPath()),
// never a decoded or cleaned copy: the rule must be decided on what the
// upstream receives. When d has a rule and rawPath is ambiguous (a
// dot-segment in any encoding, a backslash, a bad escape or a control byte:
// see requestPath), Match returns an error wrapping ErrAmbiguousPath and the
// request must be refused, not forwarded. method is compared exactly: HTTP
// methods are case-sensitive, and a server may treat "get" apart from GET.
//
// When no rule matches but one would for another identity, Match returns
// the first such rule and an error wrapping ErrIdentity: the request must be
// refused, not passed on without a credential as if no rule named it.
func (c *Config) Match(d Dest, method, rawPath, identity string) (*Rule, error) {
	var (
		best, other *Rule // other: matches all but the identity
		p           string
		checked     bool
		err         error
	)
	c.index.each(d.Host, func(r *Rule) bool {
		if err != nil || best != nil && r.index >= best.index {
			return false // lists are in file order: nothing later can win
		}
		if !r.matchesHost(d) {
			return true
		}
		if !checked { // only a host with a rule is refused for its path
			checked = true
			if p, err = requestPath(rawPath); err != nil {
				return false
			}
		}
		if !r.matchesRequest(method, p) {
			return true
		}
		if r.allows(identity) {
			best = r
			return false
		}
		if other == nil || r.index < other.index {
			other = r
		}
		return true
	})
	switch {
	case err != nil:
		return nil, err
	case best == nil && other != nil:
		return other, fmt.Errorf("rule %q is not for identity %q: %w", other.Name, identity, ErrIdentity)
	}
	return best, nil
}

// hostIndex finds the rules that may match a host without scanning them all.
// Each list is in file order; Match takes the earliest match across lists.
type hostIndex struct {
	exact map[string][]*Rule // exact host or IP literal
	wild  map[string][]*Rule // suffix of a *.suffix pattern
}

func newHostIndex(rules []*Rule) hostIndex {
	ix := hostIndex{exact: map[string][]*Rule{}, wild: map[string][]*Rule{}}
	for i, r := range rules {
		r.index = i
		for _, h := range r.hosts {
			m := ix.exact
			if h.wildcard {
				m = ix.wild
			}
			if l := m[h.host]; len(l) == 0 || l[len(l)-1] != r {
				m[h.host] = append(l, r)
			}
		}
	}
	return ix
}

// each calls fn, list by list, on the rules that may match host: those with
// the exact host, then those with a wildcard on each of host's parent
// domains. fn returns false to skip the rest of the current list.
func (ix hostIndex) each(host string, fn func(*Rule) bool) {
	visit := func(l []*Rule) {
		for _, r := range l {
			if !fn(r) {
				return
			}
		}
	}
	visit(ix.exact[host])
	for s := host; ; {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return
		}
		s = s[i+1:]
		visit(ix.wild[s])
	}
}

func (r *Rule) matchesHost(d Dest) bool {
	for _, h := range r.hosts {
		if h.matches(d) {
			return true
		}
	}
	return false
}

// allows reports whether identity may use r.
func (r *Rule) allows(identity string) bool {
	return len(r.Identities) == 0 || contains(r.Identities, identity)
}

// matchesRequest checks the method and path (from requestPath).
func (r *Rule) matchesRequest(method, p string) bool {
	if len(r.Methods) > 0 && !contains(r.Methods, method) {
		return false
	}
	if len(r.paths) == 0 {
		return true
	}
	for _, pp := range r.paths {
		if pp.matches(p) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
