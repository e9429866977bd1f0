package proxy

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/rules"
)

// Bounds of the echo memory: values kept per destination (a few leases, each
// rotated a few times), and destinations kept (a wildcard rule may name many).
const (
	maxEchoValues = 32
	maxEchoDests  = 4096
)

// echoes remembers, per destination, the values credproxy injected toward it,
// so that every response from that destination is masked against them: an
// upstream can echo a value it was sent earlier on a path no rule injects.
// Masking a value that has since been revoked costs nothing and is kept.
type echoes struct {
	mu    sync.Mutex
	dests *lru.Cache[rules.Dest, *echoSet]
	// scrubbers shares one Scrubber among destinations sent the same values
	// (a wildcard rule's thousand hosts get one credential): a Scrubber is
	// ~12 KiB of matchers, and one per host was most of credproxy's heap
	// after a thousand hosts. Keyed by the values, NUL-joined.
	scrubbers *lru.Cache[string, *secret.Scrubber]
}

type echoSet struct {
	values []string // oldest first
	s      *secret.Scrubber
}

// maxEchoScrubbers bounds the distinct value sets whose scrubbers are kept.
const maxEchoScrubbers = 256

func newEchoes() *echoes {
	c, _ := lru.New[rules.Dest, *echoSet](maxEchoDests)          // size > 0: no error
	sc, _ := lru.New[string, *secret.Scrubber](maxEchoScrubbers) // likewise
	return &echoes{dests: c, scrubbers: sc}
}

// remember adds values injected toward d.
func (e *echoes) remember(d rules.Dest, values ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	set, _ := e.dests.Get(d)
	if set != nil && !hasNew(set.values, values) {
		return
	}
	next := &echoSet{}
	if set != nil {
		next.values = slices.Clone(set.values)
	}
	for _, v := range values {
		if v != "" && !slices.Contains(next.values, v) {
			next.values = append(next.values, v)
		}
	}
	if n := len(next.values) - maxEchoValues; n > 0 {
		next.values = next.values[n:]
	}
	key := strings.Join(next.values, "\x00")
	if sc, ok := e.scrubbers.Get(key); ok {
		next.s = sc
	} else {
		next.s = secret.NewScrubberMin(secret.MinInjectLen, next.values...)
		e.scrubbers.Add(key, next.s)
	}
	e.dests.Add(d, next)
}

func hasNew(have, values []string) bool {
	for _, v := range values {
		if v != "" && !slices.Contains(have, v) {
			return true
		}
	}
	return false
}

// scrubber masks everything injected toward d; nil when nothing was.
func (e *echoes) scrubber(d rules.Dest) *secret.Scrubber {
	e.mu.Lock()
	defer e.mu.Unlock()
	if set, ok := e.dests.Get(d); ok {
		return set.s
	}
	return nil
}

// scrub masks text (an error from a transport or a store) for d.
func (e *echoes) scrub(d rules.Dest, text string) string { return e.scrubber(d).String(text) }

// maskResponse masks s's values in resp's headers, body, trailers and, after
// a 101, the upgraded stream. A body in an encoding credproxy cannot decode
// is refused, never passed on unscanned.
func maskResponse(resp *http.Response, s *secret.Scrubber) *refusal {
	if s.Empty() {
		return nil
	}
	s.Header(resp.Header)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = upgraded{ReadCloser: s.Body(rwc), w: rwc}
		}
		return nil
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		s.Header(resp.Trailer)
		return nil
	}
	body, err := decoded(resp)
	if err != nil {
		return unscannableEncoding("", err)
	}
	resp.Body = &trailerMask{ReadCloser: s.Body(body), resp: resp, s: s}
	return nil
}

// decoded undoes the upstream's content encoding, so masking sees plain
// bytes. The transport already undid the gzip it negotiated itself; this is
// for an upstream that encodes without being asked.
func decoded(resp *http.Response) (io.ReadCloser, error) {
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	var open func(io.Reader) (io.Reader, error)
	switch enc {
	case "", "identity":
		return resp.Body, nil
	case "gzip", "x-gzip":
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case "deflate":
		open = openDeflate
	default:
		return nil, fmt.Errorf("the upstream answered in content encoding %q, which credproxy cannot scan for echoed credentials", enc)
	}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Uncompressed = true
	return &lazyDecoder{src: resp.Body, open: open}, nil
}

// openDeflate reads HTTP "deflate": zlib as the RFC says, or raw deflate as
// some servers send it.
func openDeflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	h, err := br.Peek(2)
	if err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// lazyDecoder opens its decoder on the first Read, so that a response's
// headers reach the agent before its first compressed byte arrives.
type lazyDecoder struct {
	src  io.ReadCloser
	open func(io.Reader) (io.Reader, error)
	r    io.Reader
}

func (d *lazyDecoder) Read(p []byte) (int, error) {
	if d.r == nil {
		r, err := d.open(d.src)
		if err != nil {
			return 0, fmt.Errorf("decoding the upstream's body: %w", err)
		}
		d.r = r
	}
	return d.r.Read(p)
}

func (d *lazyDecoder) Close() error { return d.src.Close() }

// trailerMask masks the trailers once the body has been read to its end,
// which is when the transport fills them in. It reads resp.Trailer then, not
// before: trailers nobody announced (gRPC's) arrive in a map the transport
// creates at the end of the body.
type trailerMask struct {
	io.ReadCloser
	resp *http.Response
	s    *secret.Scrubber
}

func (t *trailerMask) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		t.s.Header(t.resp.Trailer)
	}
	return n, err
}

// upgraded is a 101 response's connection with its upstream-to-agent half
// masked; the agent-to-upstream half passes through.
type upgraded struct {
	io.ReadCloser
	w io.Writer
}

func (u upgraded) Write(p []byte) (int, error) { return u.w.Write(p) }

// withMaskedInformational masks 1xx responses' headers (103 Early Hints…)
// before httputil.ReverseProxy relays them: hooks added here run before the
// ones it installed.
func withMaskedInformational(req *http.Request, s *secret.Scrubber) *http.Request {
	trace := &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		s.Header(http.Header(h))
		return nil
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}
