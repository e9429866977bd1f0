// Package secret owns credential values once they leave the store: the
// redacting Value type and the Scrubber that masks values (raw and encoded)
// in response headers, bodies, errors and log text. Every package that must
// keep a value out of what it shows uses this one; none writes its own.
package secret

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
)

// MinLen is the shortest secret scrubbed from responses: shorter
// fields of a grant (a port, "true") would mangle ordinary bodies.
const MinLen = 8

// scrubber masks credential values that an upstream echoes back (an echo
// endpoint, an error page quoting the Authorization header, a redirect that
// carries the query key), so a value never reaches the agent. Masks have the
// secret's length, so Content-Length stays true and bodies still stream.
type Scrubber struct {
	values  []string // the secrets, for headers
	secrets [][]byte // the same as bytes, for bodies
	longest int
}

// NewScrubber masks the given values; it ignores values shorter than MinLen
// and duplicates.
func NewScrubber(values ...string) *Scrubber {
	s := &Scrubber{values: make([]string, 0, len(values)), secrets: make([][]byte, 0, len(values))}
	for _, v := range values {
		if len(v) < MinLen || slices.Contains(s.values, v) {
			continue
		}
		s.values = append(s.values, v)
		s.secrets = append(s.secrets, []byte(v))
		s.longest = max(s.longest, len(v))
	}
	return s
}

// mask overwrites b with "[redacted]" padded with '*' to b's length (only
// '*' when b is shorter than the word).
func mask(b []byte) {
	const word = "[redacted]"
	n := 0
	if len(b) >= len(word) {
		n = copy(b, word)
	}
	for i := n; i < len(b); i++ {
		b[i] = '*'
	}
}

func (s *Scrubber) Empty() bool { return s == nil || len(s.secrets) == 0 }

// String returns v with every value masked.
func (s *Scrubber) String(v string) string {
	if s.Empty() || !s.Contains(v) {
		return v
	}
	b := []byte(v)
	s.replace(b)
	return string(b)
}

// replace masks every whole occurrence in place.
func (s *Scrubber) replace(b []byte) {
	for _, sec := range s.secrets {
		for off := 0; ; {
			j := bytes.Index(b[off:], sec)
			if j < 0 {
				break
			}
			mask(b[off+j : off+j+len(sec)])
			off += j + len(sec)
		}
	}
}

// partial is the length of the longest suffix of b that is a proper prefix of
// some secret: bytes that must wait for the next read before they are sent.
func (s *Scrubber) partial(b []byte) int {
	best := 0
	for _, sec := range s.secrets {
		for l := min(len(sec)-1, len(b)); l > best; l-- {
			if bytes.HasSuffix(b, sec[:l]) {
				best = l
				break
			}
		}
	}
	return best
}

func (s *Scrubber) Header(h http.Header) {
	for _, vs := range h {
		for i, v := range vs {
			if s.Contains(v) { // copy only the rare value that holds a secret
				b := []byte(v)
				s.replace(b)
				vs[i] = string(b)
			}
		}
	}
}

func (s *Scrubber) Contains(v string) bool {
	for _, sec := range s.values {
		if strings.Contains(v, sec) {
			return true
		}
	}
	return false
}

// Buffer sizes for reads smaller than a secret can straddle: most masking
// happens in the caller's own buffer (io.Copy reads 32 KiB at a time), and a
// scrubReader allocates nothing unless a read is tiny or a tail is held back.
const (
	scrubBufSmall = 4 << 10
	scrubBufLarge = 32 << 10
)

// body wraps rc so that reads come back masked.
func (s *Scrubber) Body(rc io.ReadCloser) io.ReadCloser {
	return &scrubReader{src: rc, s: s}
}

type scrubReader struct {
	src  io.ReadCloser
	s    *Scrubber
	buf  []byte // raw bytes read and not yet handed out; its last hold bytes are held back
	out  []byte // masked bytes ready to hand out (a window into buf)
	hold int    // len of buf's tail held back as a possible secret prefix
	grow bool   // the last buffered read filled buf: use a large one
	err  error
}

func (r *scrubReader) Read(p []byte) (int, error) {
	if len(r.out) == 0 && r.err == nil && len(p) > 2*r.s.longest {
		return r.readInto(p)
	}
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// readInto reads and masks in p itself, keeping back in buf only a tail
// that could start a secret. A read never waits for more data than the
// source already gave, except for such a tail: SSE events flow one by one.
func (r *scrubReader) readInto(p []byte) (int, error) {
	for {
		k := copy(p, r.buf[len(r.buf)-r.hold:])
		n, err := r.src.Read(p[k:])
		n += k
		r.s.replace(p[:n])
		r.buf, r.hold = r.buf[:0], 0
		if err != nil {
			r.err = err
			return n, err
		}
		h := r.s.partial(p[:n])
		r.buf = append(r.buf, p[n-h:n]...)
		r.hold = h
		if n > h {
			return n - h, nil
		}
	}
}

// fill is readInto for reads too small to hold a tail: it reads once into
// buf and releases what can no longer be part of a secret.
func (r *scrubReader) fill() {
	tail := r.buf[len(r.buf)-r.hold:]
	switch {
	case r.grow || len(tail) > cap(r.buf)/2:
		buf := make([]byte, len(tail), len(tail)+scrubBufLarge)
		copy(buf, tail)
		r.buf = buf
	case cap(r.buf) < scrubBufSmall:
		buf := make([]byte, len(tail), scrubBufSmall)
		copy(buf, tail)
		r.buf = buf
	default:
		r.buf = r.buf[:copy(r.buf, tail)] // copy handles the overlap
	}
	room := r.buf[len(r.buf):cap(r.buf)]
	n, err := r.src.Read(room)
	r.grow = n == len(room) && cap(r.buf) < scrubBufLarge
	r.buf = r.buf[:len(r.buf)+n]
	r.s.replace(r.buf)
	r.hold = 0
	if err == nil {
		r.hold = r.s.partial(r.buf)
	} else {
		r.err = err
	}
	r.out = r.buf[:len(r.buf)-r.hold]
}

func (r *scrubReader) Close() error { return r.src.Close() }
