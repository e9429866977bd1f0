package secret

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// forms are the encodings of v an agent could undo, computed here with the
// standard library wherever it has one, independently of encode.go.
func forms(t testing.TB, v string) map[string]string {
	t.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	jsBody := string(js[1 : len(js)-1])
	var allU, allUpper, full, fullLower strings.Builder
	for _, r := range v {
		if r > 0xFFFF {
			r -= 0x10000
			fmt.Fprintf(&allU, `\u%04x\u%04x`, 0xD800+r>>10, 0xDC00+r&0x3FF)
			fmt.Fprintf(&allUpper, `\u%04X\u%04X`, 0xD800+r>>10, 0xDC00+r&0x3FF)
			continue
		}
		fmt.Fprintf(&allU, `\u%04x`, r)
		fmt.Fprintf(&allUpper, `\u%04X`, r)
	}
	for i := 0; i < len(v); i++ {
		fmt.Fprintf(&full, "%%%02X", v[i])
		fmt.Fprintf(&fullLower, "%%%02x", v[i])
	}
	return map[string]string{
		"raw":           v,
		"hex":           hex.EncodeToString([]byte(v)),
		"HEX":           strings.ToUpper(hex.EncodeToString([]byte(v))),
		"base64":        base64.StdEncoding.EncodeToString([]byte(v)),
		"base64 raw":    base64.RawStdEncoding.EncodeToString([]byte(v)),
		"base64url":     base64.URLEncoding.EncodeToString([]byte(v)),
		"base64url raw": base64.RawURLEncoding.EncodeToString([]byte(v)),
		"query":         url.QueryEscape(v),
		"query lower":   lowerEscapes(url.QueryEscape(v)),
		"path":          url.PathEscape(v),
		"path lower":    lowerEscapes(url.PathEscape(v)),
		"every byte":    full.String(),
		"every byte lc": fullLower.String(),
		"json":          jsBody,
		"json \\/":      strings.ReplaceAll(jsBody, "/", `\/`),
		"json all \\u":  allU.String(),
		"json all \\U":  allUpper.String(),
	}
}

func lowerEscapes(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '%' && i+2 < len(b) {
			copy(b[i+1:i+3], strings.ToLower(string(b[i+1:i+3])))
		}
	}
	return string(b)
}

// randChunks returns 1 to max bytes per Read, at random.
type randChunks struct {
	b   []byte
	max int
	rng *rand.Rand
}

func (r *randChunks) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), 1+r.rng.IntN(r.max))], r.b)
	r.b = r.b[k:]
	return k, nil
}

// splitReader returns b[:at], then the rest.
type splitReader struct {
	b  []byte
	at int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := len(r.b)
	if r.at > 0 {
		n = min(n, r.at)
	}
	k := copy(p[:min(len(p), n)], r.b)
	r.b = r.b[k:]
	r.at -= k
	return k, nil
}

// readAllWith reads the scrubbed src with a p of psize bytes per Read.
func readAllWith(t testing.TB, s *Scrubber, src io.Reader, psize int) string {
	t.Helper()
	r := s.Body(io.NopCloser(src))
	var got strings.Builder
	buf := make([]byte, psize)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			return got.String()
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}

// readers are the ways a test body arrives: whole, a byte at a time, and
// cut at random, each read with small and large buffers.
func readers(seed uint64) []struct {
	name string
	src  func(string) io.Reader
	p    int
} {
	rng := rand.New(rand.NewPCG(seed, 1))
	return []struct {
		name string
		src  func(string) io.Reader
		p    int
	}{
		{"whole/32KiB", func(s string) io.Reader { return strings.NewReader(s) }, 32 << 10},
		{"whole/1B", func(s string) io.Reader { return strings.NewReader(s) }, 1},
		{"bytes/32KiB", func(s string) io.Reader { return &randChunks{b: []byte(s), max: 1, rng: rng} }, 32 << 10},
		{"random/32KiB", func(s string) io.Reader { return &randChunks{b: []byte(s), max: 13, rng: rng} }, 32 << 10},
		{"random/7B", func(s string) io.Reader { return &randChunks{b: []byte(s), max: 40, rng: rng} }, 7},
	}
}
