package rules

import (
	"errors"
	"path"
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
// method, request path and identity; nil when none does. path is the decoded
// URL path (req.URL.Path); it is cleaned first, so /v1/../admin is /admin.
func (c *Config) Match(d Dest, method, path, identity string) *Rule {
	p := cleanPath(path)
	var best *Rule
	c.index.each(d.Host, func(r *Rule) bool {
		if best != nil && r.index >= best.index {
			return false // lists are in file order: nothing later can win
		}
		if r.matchesHost(d) && r.matchesRequest(method, p, identity) {
			best = r
			return false
		}
		return true
	})
	return best
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

// matchesRequest checks the path (already cleaned), method and identity.
func (r *Rule) matchesRequest(method, p, identity string) bool {
	if len(r.Methods) > 0 && !containsFold(r.Methods, method) {
		return false
	}
	if len(r.Identities) > 0 && !contains(r.Identities, identity) {
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

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// cleanPath resolves . and .. and doubled slashes, keeping a trailing slash,
// so that /v1/../admin cannot reach a rule written for /v1/.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if p[len(p)-1] != '/' || c == "/" {
		return c
	}
	// Reuse p's bytes when it is c plus the slash, as in the common "/v1/".
	if len(p) == len(c)+1 && p[:len(c)] == c {
		return p
	}
	return c + "/"
}

// pathPattern is one compiled entry of a rule's paths.
type pathPattern struct {
	pattern string
	kind    pathKind
}

type pathKind int

const (
	pathPrefix        pathKind = iota // "/v1/": any path starting with it
	pathSegmentPrefix                 // "/v1": /v1 itself and /v1/..., never /v1x
	pathGlob                          // "/repos/*/issues": path.Match on the whole path
)

func parsePathPattern(s string) (pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, errors.New("must start with '/'")
	}
	switch {
	case strings.Contains(s, "*"):
		if _, err := path.Match(s, ""); err != nil {
			return pathPattern{}, errors.New("bad glob: " + err.Error())
		}
		return pathPattern{pattern: s, kind: pathGlob}, nil
	case strings.HasSuffix(s, "/"):
		return pathPattern{pattern: s, kind: pathPrefix}, nil
	default:
		return pathPattern{pattern: s, kind: pathSegmentPrefix}, nil
	}
}

func (pp pathPattern) matches(p string) bool {
	switch pp.kind {
	case pathPrefix:
		return strings.HasPrefix(p, pp.pattern)
	case pathSegmentPrefix:
		return strings.HasPrefix(p, pp.pattern) &&
			(len(p) == len(pp.pattern) || p[len(pp.pattern)] == '/')
	default:
		ok, _ := path.Match(pp.pattern, p)
		return ok
	}
}
