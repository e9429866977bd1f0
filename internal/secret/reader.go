package secret

import "io"

// Buffer sizes for reads smaller than a secret can straddle: most masking
// happens in the caller's own buffer (io.Copy reads 32 KiB at a time), and a
// scrubReader allocates nothing unless a read is tiny or a tail is held back.
const (
	scrubBufSmall = 4 << 10
	scrubBufLarge = 32 << 10
)

// Body wraps rc so that reads come back masked. A value, in any form, split
// across reads is still masked: a read's tail that could begin one is held
// back until the next read settles it.
func (s *Scrubber) Body(rc io.ReadCloser) io.ReadCloser {
	if s.Empty() {
		return rc
	}
	return &scrubReader{src: rc, m: s.m}
}

type scrubReader struct {
	src  io.ReadCloser
	m    *matcher
	buf  []byte // raw bytes read and not yet handed out; its last hold bytes are held back
	out  []byte // masked bytes ready to hand out (a window into buf)
	hold int    // len of buf's tail held back, raw, as a possible secret prefix
	lead int    // how many of the held bytes an earlier occurrence covers: mask them
	grow bool   // the last buffered read filled buf: use a large one
	err  error
}

func (r *scrubReader) Read(p []byte) (int, error) {
	if len(r.out) == 0 && r.err == nil && len(p) > 2*r.m.maxLen {
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
		r.buf, r.hold = r.buf[:0], 0
		hold := 0
		if err == nil {
			hold = r.m.partial(p[:n])
		}
		r.lead = r.m.maskRuns(p[:n], r.lead, n-hold)
		if err != nil {
			r.err = err
			return n, err
		}
		r.buf = append(r.buf, p[n-hold:n]...)
		r.hold = hold
		if n > hold {
			return n - hold, nil
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
	r.hold = 0
	if err == nil {
		r.hold = r.m.partial(r.buf)
	} else {
		r.err = err
	}
	r.lead = r.m.maskRuns(r.buf, r.lead, len(r.buf)-r.hold)
	r.out = r.buf[:len(r.buf)-r.hold]
}

func (r *scrubReader) Close() error { return r.src.Close() }
