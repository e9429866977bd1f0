package secret

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

// An echo may quote a window cut out of a larger base64 blob (a truncated
// log field): without the blob's first and last quantum, the window is still
// most of the value and must be masked.
func TestBase64WindowCutFromBlobIsMasked(t *testing.T) {
	const v = "sk-test-hostile-4f9a1c7e2b8d6053"
	s := NewScrubber(v)
	for off := 1; off <= 2; off++ {
		for name, enc := range map[string]*base64.Encoding{"std": base64.RawStdEncoding, "url": base64.RawURLEncoding} {
			blob := enc.EncodeToString(append(bytes.Repeat([]byte{'A'}, off), v...))
			window := blob[4 : len(blob)-4]
			out, err := io.ReadAll(s.Body(io.NopCloser(strings.NewReader("xx" + window + "xx"))))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), window) {
				t.Errorf("%s alphabet, offset %d: the window %q came through unmasked: %q", name, off, window, out)
			}
		}
	}
}
