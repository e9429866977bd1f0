package secret

import (
	"math/bits"
	"slices"
)

// probeSpan caps how far apart the probes of a clean body are: a longer span
// skips more bytes per probe but puts more 4-grams in the filter, which then
// lets more ordinary text through to the exact check.
const probeSpan = 24

// matcher finds where any of a set of patterns (every value in every form)
// occurs. The proxy builds one per request, so building is cheap (a few flat
// slices, no automaton), and a body with no secret in it, the common case,
// costs one hashed 4-byte probe every step bytes:
//
// every occurrence is at least span bytes long, and any step = span-3
// consecutive positions hold a multiple of step, so one probe reads a 4-gram
// from the first span bytes of every occurrence. The filter holds all those
// 4-grams; only a probe that hits it looks at the step positions it covers.
// When every pattern is 4 bytes longer than span, the filter also holds the
// grams 4 bytes further, and a probe must hit twice: text that shares one
// 4-gram with a secret (a "0123" in an id) rarely shares the next.
type matcher struct {
	pats   []string // deduplicated, each at least MinInjectLen bytes
	heads  []uint32 // each pattern's first 4 bytes, as load4 reads them
	minLen int
	maxLen int
	step   int
	span   int      // how many bytes from a probe's window start the filter covers
	twice  bool     // probe j and j+4
	grams  []uint64 // bitset of hashed 4-grams from the first span bytes of each pattern
	gshift uint
	bstart []int32 // the patterns whose head hashes to h are bids[bstart[h]:bstart[h+1]]
	bids   []int32
	bshift uint
	firsts [4]uint64 // bitset of the patterns' first bytes
	shorts []uint32  // sorted k<<24 | first k bytes, k = 1..3: prefixes too short for heads
}

// text is what the matcher searches: bodies are bytes, headers strings.
type text interface{ ~string | ~[]byte }

func load4[T text](b T, i int) uint32 {
	_ = b[i+3]
	return uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24
}

func hash(x uint32, shift uint) uint32 { return (x * 0x9E3779B1) >> shift }

// pow2 returns the smallest power of two ≥ n (≥ 1) and its log.
func pow2(n int) (int, uint) {
	l := uint(bits.Len(uint(max(n, 1) - 1)))
	return 1 << l, l
}

func newMatcher(pats []string) *matcher {
	m := &matcher{pats: pats, minLen: len(pats[0]), heads: make([]uint32, len(pats))}
	for _, p := range pats {
		m.minLen, m.maxLen = min(m.minLen, len(p)), max(m.maxLen, len(p))
	}
	span := min(m.minLen, probeSpan)
	m.step = span - 3
	m.twice = m.minLen >= span+4
	if m.twice {
		span += 4 // the filter holds the grams the second probe reads
	}
	m.span = span
	// About 1 bit in 32 set: a probe of ordinary text rarely hits by hash collision.
	size, l := pow2(len(pats) * (span - 3) * 32)
	size, l = max(size, 1<<11), max(l, 11)
	if size > 1<<16 {
		size, l = 1<<16, 16
	}
	m.grams, m.gshift = make([]uint64, size/64), 32-l
	nb, lb := pow2(len(pats))
	m.bstart, m.bids, m.bshift = make([]int32, nb+1), make([]int32, len(pats)), 32-lb
	for i, p := range pats {
		for off := 0; off+4 <= span; off++ {
			h := hash(load4(p, off), m.gshift)
			m.grams[h/64] |= 1 << (h % 64)
		}
		m.heads[i] = load4(p, 0)
		m.bstart[hash(m.heads[i], m.bshift)+1]++
		m.firsts[p[0]/64] |= 1 << (p[0] % 64)
		for k := 1; k <= 3; k++ {
			m.shorts = append(m.shorts, short(p[:k]))
		}
	}
	for h := range nb {
		m.bstart[h+1] += m.bstart[h]
	}
	fill := slices.Clone(m.bstart[:nb])
	for i := range pats {
		h := hash(m.heads[i], m.bshift)
		m.bids[fill[h]] = int32(i)
		fill[h]++
	}
	slices.Sort(m.shorts)
	m.shorts = slices.Compact(m.shorts)
	return m
}

func short[T text](b T) uint32 {
	k := uint32(len(b)) << 24
	for i := range len(b) {
		k |= uint32(b[i]) << (8 * i)
	}
	return k
}

func (m *matcher) first(c byte) bool { return m.firsts[c/64]&(1<<(c%64)) != 0 }

func (m *matcher) gram(x uint32) bool {
	h := hash(x, m.gshift)
	return m.grams[h/64]&(1<<(h%64)) != 0
}

// next returns the first position ≥ from where a pattern occurs in b, and the
// length of the longest one there, or -1.
func next[T text](m *matcher, b T, from int) (int, int) {
	last := len(b) - m.minLen // no occurrence starts after it
	if from > last {
		return -1, 0
	}
	s := m.step
	// The probe at j covers positions j-s+1..j; last+s+2 < len(b) keeps
	// load4 in bounds while the window reaches last, and j+4 too with twice.
	for j := (from + s - 1) / s * s; j-s+1 <= last; j += s {
		if !probe(m, b, j) {
			continue
		}
		for p := max(from, j-s+1); p <= min(j, last); p++ {
			if !m.first(b[p]) || !m.gram(load4(b, p)) {
				continue
			}
			if l := longestAt(m, b, p); l > 0 {
				return p, l
			}
		}
	}
	return -1, 0
}

// probe reports whether the grams at j (and j+4) could be in an occurrence
// that starts in the step positions up to j.
func probe[T text](m *matcher, b T, j int) bool {
	return m.gram(load4(b, j)) && (!m.twice || m.gram(load4(b, j+4)))
}

// longestAt returns the length of the longest pattern at b[p:], or 0.
func longestAt[T text](m *matcher, b T, p int) int {
	x := load4(b, p)
	h := hash(x, m.bshift)
	best := 0
	for _, id := range m.bids[m.bstart[h]:m.bstart[h+1]] {
		pat := m.pats[id]
		if m.heads[id] == x && len(pat) > best && len(pat) <= len(b)-p && string(b[p:p+len(pat)]) == pat {
			best = len(pat)
		}
	}
	return best
}

// partial is the length of the longest suffix of b that is a proper prefix
// of some pattern: bytes that must wait for the next read before they are
// sent, since the read after may complete a secret. A suffix long enough to
// hold a probe's window is found by probing, as next does; only the last
// span positions are tried one by one.
func (m *matcher) partial(b []byte) int {
	n, s := len(b), m.step
	lo := max(0, n-m.maxLen+1)
	long := n - m.span // a suffix from q <= long covers a whole window
	for j := (lo + s - 1) / s * s; j-s+1 <= long; j += s {
		if !probe(m, b, j) {
			continue
		}
		for q := max(lo, j-s+1); q <= min(j, long); q++ {
			if m.prefixAt(b, q) {
				return n - q
			}
		}
	}
	for q := max(lo, long+1); q < n; q++ {
		if m.prefixAt(b, q) {
			return n - q
		}
	}
	return 0
}

// prefixAt reports whether b[q:] is a proper prefix of a pattern.
func (m *matcher) prefixAt(b []byte, q int) bool {
	if !m.first(b[q]) {
		return false
	}
	k := len(b) - q
	if k < 4 {
		_, ok := slices.BinarySearch(m.shorts, short(b[q:]))
		return ok
	}
	x := load4(b, q)
	if !m.gram(x) {
		return false
	}
	h := hash(x, m.bshift)
	for _, id := range m.bids[m.bstart[h]:m.bstart[h+1]] {
		if pat := m.pats[id]; m.heads[id] == x && len(pat) > k && pat[:k] == string(b[q:]) {
			return true
		}
	}
	return false
}

// maskRuns masks, in b[:keep], every byte covered by an occurrence of a
// pattern in b, or among b's first lead bytes (the rest of an occurrence that
// began in an earlier read). It finds all occurrences in the raw bytes before
// masking any, so overlapping secrets are masked whole. b[keep:] stays raw for
// the next read to search again; the result is how many of its first bytes an
// occurrence that began before keep covers: the next read's lead.
func (m *matcher) maskRuns(b []byte, lead, keep int) int {
	carry := 0
	flush := func(s, e int) {
		if s <= keep && e > keep {
			carry = e - keep
		}
		if s < keep {
			mask(b[s:min(e, keep)])
		}
	}
	s, e := 0, lead
	for from := 0; ; {
		p, l := next(m, b, from)
		if p < 0 {
			break
		}
		if p >= e { // masking s..e now cannot hide a later occurrence: they start at e or past it
			flush(s, e)
			s = p
		}
		e = max(e, p+l)
		from = p + 1
	}
	flush(s, e)
	return carry
}

// mask overwrites b with "[redacted]" padded with '*' to b's length (only
// '*' when b is shorter than the word): the length stays, so Content-Length
// stays true and a body still streams.
func mask(b []byte) {
	n := 0
	if len(b) >= len(Redacted) {
		n = copy(b, Redacted)
	}
	for i := n; i < len(b); i++ {
		b[i] = '*'
	}
}
