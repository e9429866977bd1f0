package rules

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// requestPath turns a path as it goes out on the wire (req.URL.EscapedPath())
// into the string path patterns are matched against, or refuses it with
// ErrAmbiguousPath when servers may disagree on what it names.
//
// The rule is decided on the same bytes that are forwarded, so nothing is
// cleaned: /v1/../admin would be matched as /v1/ and served as /admin by an
// upstream that resolves dot-segments (or %2e%2e, or ..%2F, or ..;). Such a
// path is refused, in any encoding. Otherwise every escape is decoded once,
// as the upstream will, except %2F and %5C: they are data inside a segment
// (GitLab's group%2Fproject), kept as the text "%2F" and "%5C". Duplicate
// slashes are kept too; see pathPattern.matches.
func requestPath(raw string) (string, error) {
	switch {
	case raw == "":
		return "/", nil // what an HTTP client sends for an empty path
	case raw == "*":
		return raw, nil // OPTIONS *: no pattern matches it, a rule without paths does
	case raw[0] != '/':
		return "", ambiguous("does not start with '/'")
	}
	var b []byte // the decoded path, once a segment needed decoding
	for i := 0; i < len(raw); {
		j := strings.IndexByte(raw[i+1:], '/')
		if j < 0 {
			j = len(raw)
		} else {
			j += i + 1
		}
		seg := raw[i+1 : j] // between the slash at i and the next
		if err := checkRawSegment(seg); err != nil {
			return "", err
		}
		if strings.IndexByte(seg, '%') >= 0 {
			if b == nil {
				b = append(make([]byte, 0, len(raw)), raw[:i]...)
			}
			var err error
			if b, err = decodeSegment(append(b, '/'), seg); err != nil {
				return "", err
			}
		} else if b != nil {
			b = append(append(b, '/'), seg...)
		}
		i = j
	}
	if b == nil {
		return raw, nil // the common case: nothing to decode, no allocation
	}
	return string(b), nil
}

func ambiguous(why string) error {
	return fmt.Errorf("%w: %s", ErrAmbiguousPath, why)
}

// checkRawSegment refuses what a segment shows before decoding.
func checkRawSegment(seg string) error {
	for k := 0; k < len(seg); k++ {
		switch c := seg[k]; {
		case c == '\\':
			// Windows servers and some frameworks read it as '/'.
			return ambiguous("backslash")
		case c < 0x20 || c == 0x7f:
			return ambiguous("control byte")
		}
	}
	if isDotSegment(seg) {
		return ambiguous("dot-segment")
	}
	return nil
}

// decodeSegment appends seg, with its escapes decoded except %2F and %5C, to
// b. The fully decoded segment must not hold a dot-segment between the
// slashes and backslashes it decodes to, nor a control byte, nor invalid
// UTF-8 (old decoders read the overlong %C0%AE as '.').
func decodeSegment(b []byte, seg string) ([]byte, error) {
	var full [64]byte
	dec := full[:0]
	for k := 0; k < len(seg); k++ {
		c := seg[k]
		if c != '%' {
			b, dec = append(b, c), append(dec, c)
			continue
		}
		if k+2 >= len(seg) || !isHex(seg[k+1]) || !isHex(seg[k+2]) {
			return nil, ambiguous("bad percent-escape")
		}
		c = unhex(seg[k+1])<<4 | unhex(seg[k+2])
		k += 2
		switch {
		case c == '/':
			b = append(b, "%2F"...)
		case c == '\\':
			b = append(b, "%5C"...)
		case c < 0x20 || c == 0x7f:
			return nil, ambiguous("control byte")
		default:
			b = append(b, c)
		}
		dec = append(dec, c)
	}
	if !utf8.Valid(dec) {
		return nil, ambiguous("invalid UTF-8")
	}
	for _, part := range strings.FieldsFunc(string(dec), func(r rune) bool { return r == '/' || r == '\\' }) {
		if isDotSegment(part) {
			return nil, ambiguous("encoded dot-segment")
		}
	}
	return b, nil
}

// isDotSegment reports "." and "..", also with a path parameter: Tomcat and
// Spring read /..;x=1/ as /../.
func isDotSegment(s string) bool {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	return s == "." || s == ".."
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
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

// parsePathPattern compiles a `paths:` entry. It is written as requestPath
// returns paths: decoded, with %2F for a slash inside a segment. A pattern
// that no request path could match is an error rather than a dead rule.
func parsePathPattern(s string) (pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, errors.New("must start with '/'")
	}
	if strings.Contains(s, `\`) {
		return pathPattern{}, errors.New(`backslash: write a literal one as %5C`)
	}
	if strings.Contains(s, "//") {
		return pathPattern{}, errors.New("empty segment ('//')")
	}
	for _, seg := range strings.Split(s, "/") {
		if isDotSegment(seg) {
			return pathPattern{}, errors.New("dot-segment ('.' or '..'): such request paths are refused")
		}
	}
	s, err := canonicalEscapes(s)
	if err != nil {
		return pathPattern{}, err
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

// canonicalEscapes upper-cases %2f and %5c in a pattern and refuses any other
// escape, since request paths are matched decoded.
func canonicalEscapes(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		if b[i] != '%' {
			continue
		}
		if i+2 >= len(b) || b[i+1] != '2' && b[i+1] != '5' ||
			(b[i+1] == '2' && b[i+2] != 'f' && b[i+2] != 'F') || (b[i+1] == '5' && b[i+2] != 'c' && b[i+2] != 'C') {
			return "", errors.New("only %2F and %5C may be escaped: write other characters decoded")
		}
		b[i+2] &^= 0x20 // upper case
		i += 2
	}
	return string(b), nil
}

// matches reports whether the request path p (from requestPath) is under
// the pattern. p is compared as sent, so "//" is never merged: a prefix
// still holds whether or not the upstream merges it (/v1//x stays under
// /v1/), but a glob's '*' could match the empty segment a server merges
// away (/repos//issues is /repos/issues there), so a glob never matches a
// path with "//".
func (pp pathPattern) matches(p string) bool {
	switch pp.kind {
	case pathPrefix:
		return strings.HasPrefix(p, pp.pattern)
	case pathSegmentPrefix:
		return strings.HasPrefix(p, pp.pattern) &&
			(len(p) == len(pp.pattern) || p[len(pp.pattern)] == '/')
	default:
		if strings.Contains(p, "//") {
			return false
		}
		ok, _ := path.Match(pp.pattern, p)
		return ok
	}
}
