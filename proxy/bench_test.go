package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

// The hot-path costs of a MITM'd request that rules/ does not measure: the
// leaf for the CONNECT host (cached or minted) and masking the response.
// End-to-end numbers are in bench/load (docs/benchmarks.md).

func benchCA(b *testing.B) *CA {
	b.Helper()
	dir := b.TempDir()
	ca, _, err := LoadOrCreateCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	return ca
}

// warmLeafCache returns a leaf cache that already holds api.example.test.
func warmLeafCache(b *testing.B) *leafCache {
	b.Helper()
	lc, err := newLeafCache(benchCA(b), 1024, nopObserver{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := lc.get("api.example.test"); err != nil {
		b.Fatal(err)
	}
	return lc
}

// BenchmarkLeafCacheHit is every CONNECT to a host seen before.
func BenchmarkLeafCacheHit(b *testing.B) {
	lc := warmLeafCache(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := lc.get("api.example.test"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLeafCacheHitParallel is the same under contention (the LRU locks).
func BenchmarkLeafCacheHitParallel(b *testing.B) {
	lc := warmLeafCache(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := lc.get("api.example.test"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLeafMint is the first CONNECT to a host: a fresh ECDSA P-256 key
// and a signature by the CA.
func BenchmarkLeafMint(b *testing.B) {
	lc, err := newLeafCache(benchCA(b), 1024, nopObserver{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := lc.mint("api.example.test"); err != nil {
			b.Fatal(err)
		}
	}
}

const benchSecret = "sk-test-bench-0123456789abcdefghijklmnopqrstuvwxyz"

// benchBody is 64 KiB of JSON-ish text with no secret in it: the common case,
// where masking must find nothing and copy the bytes through.
var benchBody = func() []byte {
	line := `{"id":"chatcmpl-0123","object":"chat.completion.chunk","choices":[{"delta":{"content":"hello"}}]}` + "\n"
	return []byte(strings.Repeat(line, 64<<10/len(line)+1)[:64<<10])
}()

// BenchmarkMaskResponse is maskResponse plus reading the masked body, as the
// proxy does for every injected request: a typical 1 KiB API answer and a
// 64 KiB one.
func BenchmarkMaskResponse(b *testing.B) {
	echo := newEchoes()
	dest := rules.Dest{Host: "api.example.test", Port: 443}
	echo.remember(dest, benchSecret, "Bearer "+benchSecret)
	for _, size := range []int{1 << 10, 64 << 10} {
		body := benchBody[:size]
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				resp := &http.Response{StatusCode: http.StatusOK,
					Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789"}},
					Body:   io.NopCloser(bytes.NewReader(body))}
				if ref := maskResponse(resp, echo.scrubber(dest)); ref != nil {
					b.Fatal(ref)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
