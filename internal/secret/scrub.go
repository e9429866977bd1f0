// Package secret owns credential values once they leave the store: the
// redacting Value type and the Scrubber that masks values (raw and encoded)
// in response headers, bodies, errors and log text. Every package that must
// keep a value out of what it shows uses this one; none writes its own.
package secret

import (
	"net/http"
	"slices"
)

// MinLen is the shortest value NewScrubber masks: the fields of a grant are
// masked automatically, and a short one (a port, "true") would mangle
// ordinary bodies.
const MinLen = 8

// MinInjectLen is the shortest value NewScrubberMin masks. Below it even a
// value a caller injected would match everywhere (every "abc" in a body).
const MinInjectLen = 4

// Redacted is what a masked value, or a printed Value, shows instead.
const Redacted = "[redacted]"

// Scrubber masks credential values that an upstream echoes back (an echo
// endpoint, an error page quoting the Authorization header, a redirect that
// carries the query key), so a value never reaches the agent, raw or in any
// of the encodings an agent could undo: base64 (both alphabets, at any offset
// inside a larger blob), hex, percent-encoding, JSON and Go string escapes.
// Masks have the length of what they cover, so Content-Length stays true and
// bodies still stream. A nil *Scrubber masks nothing.
type Scrubber struct {
	m *matcher // nil when there is nothing to mask
}

// NewScrubber masks the given values; it ignores values shorter than MinLen
// and duplicates. It suits values the caller did not pick one by one, such
// as every field of a grant.
func NewScrubber(values ...string) *Scrubber {
	return NewScrubberMin(MinLen, values...)
}

// NewScrubberMin masks the given values that are at least min bytes long
// (raised to MinInjectLen). A caller that injected a short value itself (a
// 6-character PIN in a header) passes its length, so the value cannot leak
// for being short. The price is false positives: the shorter the value, the
// likelier ordinary body text happens to equal it or one of its encodings
// (a 4-byte value's base64 run is 4 characters, found about once per 3 MB of
// random base64), and such text is masked too: the body keeps its length but
// not those bytes.
func NewScrubberMin(min int, values ...string) *Scrubber {
	min = max(min, MinInjectLen)
	size := 0
	for _, v := range values {
		if len(v) >= min {
			size += formsLen * len(v)
		}
	}
	arena := make([]byte, 0, size)
	ends := make([]int, 0, formsCount*len(values))
	for _, v := range values {
		if len(v) >= min {
			arena, ends = appendForms(arena, ends, v)
		}
	}
	if len(ends) == 0 {
		return &Scrubber{}
	}
	all := string(arena) // one copy that every pattern slices
	pats := make([]string, 0, len(ends))
	start := 0
	for _, end := range ends {
		if end-start >= MinInjectLen {
			pats = append(pats, all[start:end])
		}
		start = end
	}
	slices.Sort(pats)
	return &Scrubber{m: newMatcher(slices.Compact(pats))}
}

// Empty reports whether s masks nothing, so a caller can skip wrapping.
func (s *Scrubber) Empty() bool { return s == nil || s.m == nil }

// Contains reports whether v holds any value, in any form s masks.
func (s *Scrubber) Contains(v string) bool {
	if s.Empty() {
		return false
	}
	p, _ := next(s.m, v, 0)
	return p >= 0
}

// String returns v with every value masked, for log and error text.
func (s *Scrubber) String(v string) string {
	if !s.Contains(v) {
		return v
	}
	b := []byte(v)
	s.m.maskRuns(b, 0, len(b))
	return string(b)
}

// Bytes masks every value in b in place, for a whole message in hand
// (trailers, a 1xx response); use Body for a stream.
func (s *Scrubber) Bytes(b []byte) {
	if !s.Empty() {
		s.m.maskRuns(b, 0, len(b))
	}
}

// Header masks every value in h in place.
func (s *Scrubber) Header(h http.Header) {
	for _, vs := range h {
		for i, v := range vs {
			if s.Contains(v) { // copy only the rare value that holds a secret
				b := []byte(v)
				s.m.maskRuns(b, 0, len(b))
				vs[i] = string(b)
			}
		}
	}
}
