package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"
)

// minScrubLen is the shortest secret scrubbed from responses: shorter
// fields of a grant (a port, "true") would mangle ordinary bodies.
const minScrubLen = 8

// scrubber masks credential values that an upstream echoes back (an echo
// endpoint, an error page quoting the Authorization header, a redirect that
// carries the query key), so a value never reaches the agent. Masks have the
// secret's length, so Content-Length stays true and bodies still stream.
type scrubber struct {
	secrets [][]byte
	masks   [][]byte
	longest int
}

func newScrubber(values ...string) *scrubber {
	s := &scrubber{}
	seen := make(map[string]bool, len(values))
	for _, v := range values {
		if len(v) < minScrubLen || seen[v] {
			continue
		}
		seen[v] = true
		s.secrets = append(s.secrets, []byte(v))
		s.masks = append(s.masks, mask(len(v)))
		s.longest = max(s.longest, len(v))
	}
	return s
}

func mask(n int) []byte {
	const word = "[redacted]"
	if n < len(word) {
		return bytes.Repeat([]byte("*"), n)
	}
	return []byte(word + strings.Repeat("*", n-len(word)))
}

func (s *scrubber) empty() bool { return len(s.secrets) == 0 }

// replace masks every whole occurrence in place.
func (s *scrubber) replace(b []byte) {
	for i, sec := range s.secrets {
		for off := 0; ; {
			j := bytes.Index(b[off:], sec)
			if j < 0 {
				break
			}
			copy(b[off+j:], s.masks[i])
			off += j + len(sec)
		}
	}
}

// partial is the length of the longest suffix of b that is a proper prefix of
// some secret: bytes that must wait for the next read before they are sent.
func (s *scrubber) partial(b []byte) int {
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

func (s *scrubber) headers(h http.Header) {
	for k, vs := range h {
		for i, v := range vs {
			b := []byte(v)
			s.replace(b)
			if string(b) != v {
				h[k][i] = string(b)
			}
		}
	}
}

// Every injected response gets a scrubReader, so its buffer starts small
// (most API answers fit) and grows once a read fills it: a large body.
const (
	scrubBufSmall = 4 << 10
	scrubBufLarge = 32 << 10
)

// body wraps rc so that reads come back masked.
func (s *scrubber) body(rc io.ReadCloser) io.ReadCloser {
	return &scrubReader{src: rc, s: s, buf: make([]byte, 0, scrubBufSmall)}
}

type scrubReader struct {
	src  io.ReadCloser
	s    *scrubber
	buf  []byte // raw bytes read and not yet handed out
	out  []byte // masked bytes ready to hand out (a window into buf)
	hold int    // len of buf's tail held back as a possible secret prefix
	grow bool   // the last read filled buf: use a large one
	err  error
}

func (r *scrubReader) Read(p []byte) (int, error) {
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

// fill reads once from the source and releases what can no longer be part of
// a secret. A read never waits for more data than the source already gave,
// except for a tail that could start a secret: SSE events still flow one by one.
func (r *scrubReader) fill() {
	tail := r.buf[len(r.buf)-r.hold:]
	if r.grow || len(tail) > cap(r.buf)/2 {
		buf := make([]byte, len(tail), len(tail)+scrubBufLarge)
		copy(buf, tail)
		r.buf = buf
	} else {
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
