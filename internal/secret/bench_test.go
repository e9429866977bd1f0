package secret

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

const benchSecret = "sk-test-bench-0123456789abcdefghijklmnopqrstuvwxyz"

// benchBody is 64 KiB of JSON-ish text with no secret in it: the common case,
// where masking must find nothing and copy the bytes through.
var benchBody = func() []byte {
	line := `{"id":"chatcmpl-0123","object":"chat.completion.chunk","choices":[{"delta":{"content":"hello"}}]}` + "\n"
	return []byte(strings.Repeat(line, 64<<10/len(line)+1)[:64<<10])
}()

// chunkReader returns at most n bytes per Read, as a TLS record at a time.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// BenchmarkScrubber is the body scrubber alone, with and without echoed
// secrets, read in small chunks (as a TLS record at a time) and large ones;
// "20values" is a host with several live leases.
func BenchmarkScrubber(b *testing.B) {
	// Echoed secrets straddle every 4 KiB read boundary.
	echoed := bytes.Clone(benchBody)
	for off := 4<<10 - 7; off+len(benchSecret) < len(echoed); off += 4 << 10 {
		copy(echoed[off:], benchSecret)
	}
	many := []string{benchSecret, "Bearer " + benchSecret}
	for i := len(many); i < 20; i++ {
		many = append(many, fmt.Sprintf("sk-test-lease-%02d-0123456789abcdefghijklmnop", i))
	}
	cases := []struct {
		name   string
		values []string
		body   []byte
		chunk  int
	}{
		{"clean/16KiB", many[:2], benchBody, 16 << 10},
		{"clean/1KiB", many[:2], benchBody, 1 << 10},
		{"echoed/16KiB", many[:2], echoed, 16 << 10},
		{"20values/clean/16KiB", many, benchBody, 16 << 10},
		{"20values/echoed/16KiB", many, echoed, 16 << 10},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s := NewScrubber(c.values...)
			got, err := io.ReadAll(s.Body(io.NopCloser(&chunkReader{b: c.body, n: c.chunk})))
			masked := []byte(benchSecret)
			mask(masked)
			if want := bytes.ReplaceAll(c.body, []byte(benchSecret), masked); err != nil || !bytes.Equal(got, want) {
				b.Fatalf("scrubbed body differs from the masked input (err %v)", err)
			}
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				r := s.Body(io.NopCloser(&chunkReader{b: c.body, n: c.chunk}))
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf)
				if err != nil || n != int64(len(c.body)) {
					b.Fatalf("copied %d, %v; want %d bytes", n, err, len(c.body))
				}
			}
		})
	}
}

// BenchmarkNewScrubber is the per-request cost: the proxy builds one for
// every injected request (the value, the sent Authorization header).
func BenchmarkNewScrubber(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NewScrubber(benchSecret, "Bearer "+benchSecret)
	}
}
