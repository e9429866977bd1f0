package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

func TestScrubberMasksAcrossReadBoundaries(t *testing.T) {
	const secret = "sk-test-abcdefghijklmnop"
	cases := []struct{ name, in string }{
		{"whole", "before " + secret + " after"},
		{"start", secret + " tail"},
		{"end", "head " + secret},
		{"twice", secret + secret},
		{"prefix only at end", "text ends with sk-test-abc"},
		{"none", strings.Repeat("x", 100)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// OneByteReader makes every secret straddle reads.
			s := NewScrubber(secret, "short")
			got, err := io.ReadAll(s.Body(io.NopCloser(iotest.OneByteReader(strings.NewReader(c.in)))))
			if err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(c.in, secret, "[redacted]**************")
			if string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if len(got) != len(c.in) {
				t.Errorf("length changed: %d -> %d (Content-Length would lie)", len(c.in), len(got))
			}
		})
	}
}

func TestScrubberIgnoresShortValues(t *testing.T) {
	s := NewScrubber("true", "5432")
	if !s.Empty() {
		t.Fatal("values shorter than minScrubLen must not be masked: they would mangle ordinary bodies")
	}
}

// A held-back tail must not delay an SSE event that cannot be a secret.
func TestScrubberReleasesEventsWithoutWaiting(t *testing.T) {
	s := NewScrubber("sk-test-abcdefghijklmnop")
	pr, pw := io.Pipe()
	r := s.Body(pr)
	go pw.Write([]byte("data: first\n\n"))
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "data: first\n\n" {
		t.Fatalf("read %q, %v; want the whole event at once", buf[:n], err)
	}
	pw.Close()
}

// Callers read with buffers of every size; masking must not depend on it.
func TestScrubberAnyReadSize(t *testing.T) {
	const secret = "sk-test-abcdefghijklmnop"
	in := strings.Repeat("x", 37) + secret + strings.Repeat("y", 5000) + secret[:10] + "z" + secret
	want := strings.ReplaceAll(in, secret, "[redacted]**************")
	for _, size := range []int{1, 3, 24, 49, 50, 64, 4096, 40000} {
		for _, src := range []func() io.Reader{
			func() io.Reader { return strings.NewReader(in) },
			func() io.Reader { return iotest.OneByteReader(strings.NewReader(in)) },
			func() io.Reader { return iotest.HalfReader(strings.NewReader(in)) },
		} {
			r := NewScrubber(secret).Body(io.NopCloser(src()))
			var got strings.Builder
			buf := make([]byte, size)
			for {
				n, err := r.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if got.String() != want {
				t.Fatalf("read size %d: output differs from the masked input (len %d vs %d)", size, got.Len(), len(want))
			}
		}
	}
}

// Secrets of the shapes the proxy injects: a plain API key, a Basic
// credential, and one with characters every escaping form treats differently.
var hostileSecrets = []string{
	"sk-test-abcdefghijklmnop",
	"user:p@ss w0rd",
	`sk/te+st&<k"e\y>é=☃?`,
}

// The pentest's holes: every form of a secret must be masked wherever it
// sits and however the body is cut into reads, and the length must stay.
func TestScrubberMasksEveryEncoding(t *testing.T) {
	for _, secret := range hostileSecrets {
		s := NewScrubber(secret)
		for name, enc := range forms(t, secret) {
			for _, body := range []string{enc, "before " + enc + " after", "x" + enc, enc + "\n\n" + enc} {
				for _, rd := range readers(uint64(len(body))) {
					got := readAllWith(t, s, rd.src(body), rd.p)
					if len(got) != len(body) {
						t.Fatalf("%q %s, %s: length %d -> %d (Content-Length would lie)", secret, name, rd.name, len(body), len(got))
					}
					if strings.Contains(got, enc) || strings.Contains(got, secret) {
						t.Fatalf("%q %s, %s: %q leaked in %q", secret, name, rd.name, enc, got)
					}
				}
			}
			if got := s.String("err: " + enc); strings.Contains(got, enc) {
				t.Errorf("%q %s: String kept it: %q", secret, name, got)
			}
		}
	}
}

// A secret's form split at every possible read boundary is still masked.
func TestScrubberEveryBoundary(t *testing.T) {
	const secret = "sk-test-abcdefghijklmnop"
	s := NewScrubber(secret)
	for name, enc := range forms(t, secret) {
		body := "data: " + enc + "\n\n"
		for at := 1; at < len(body); at++ {
			for _, p := range []int{1, 5, 32 << 10} {
				got := readAllWith(t, s, &splitReader{b: []byte(body), at: at}, p)
				if strings.Contains(got, enc) || len(got) != len(body) {
					t.Fatalf("%s split at %d, read %d: got %q", name, at, p, got)
				}
			}
		}
	}
}

func TestScrubberHostileBodies(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		in     string
		leaks  []string // none of these may survive
		want   string   // exact output, when set
	}{
		{name: "empty body", values: []string{"sk-test-abcdefgh"}, in: "", want: ""},
		{name: "ends in a partial prefix", values: []string{"sk-test-abcdefgh"},
			in: "text sk-test-abc", want: "text sk-test-abc"},
		{name: "ends in a partial encoded prefix", values: []string{"sk-test-abcdefgh"},
			in: "text c2stdGVzdC", want: "text c2stdGVzdC"},
		{name: "prefix of another: the longer", values: []string{"sk-test-abcdefgh", "sk-test-abcdefghijkl"},
			in: "<sk-test-abcdefghijkl>", want: "<[redacted]**********>"},
		{name: "prefix of another: the shorter", values: []string{"sk-test-abcdefgh", "sk-test-abcdefghijkl"},
			in: "<sk-test-abcdefghXYZ>", want: "<[redacted]******XYZ>"},
		{name: "overlapping secrets", values: []string{"sk-test-AAAA1111", "AAAA1111-more-secret"},
			in: "sk-test-AAAA1111-more-secret!", leaks: []string{"more-secret", "sk-test", "AAAA", "1111"}},
		{name: "back to back", values: []string{"sk-test-abcdefgh"},
			in: "sk-test-abcdefghsk-test-abcdefgh", want: "[redacted]******[redacted]******"},
		{name: "bearer and bare", values: []string{"sk-test-abcdefgh", "Bearer sk-test-abcdefgh"},
			in: "Authorization: Bearer sk-test-abcdefgh", want: "Authorization: [redacted]*************"},
		{name: "basic header and bare", values: []string{"user:pass-word"},
			in: "Basic dXNlcjpwYXNzLXdvcmQ= and user:pass-word", leaks: []string{"dXNlcjpwYXNz", "user:pass"}},
		{name: "almost a secret", values: []string{"sk-test-abcdefgh"},
			in: "sk-test-abcdefgX sk-test-abcdefg", want: "sk-test-abcdefgX sk-test-abcdefg"},
	}
	for _, c := range cases {
		s := NewScrubber(c.values...)
		for _, rd := range readers(7) {
			got := readAllWith(t, s, rd.src(c.in), rd.p)
			if c.want != "" || c.in == "" {
				if got != c.want {
					t.Errorf("%s, %s: got %q, want %q", c.name, rd.name, got, c.want)
				}
			}
			if len(got) != len(c.in) {
				t.Errorf("%s, %s: length %d -> %d", c.name, rd.name, len(c.in), len(got))
			}
			for _, l := range c.leaks {
				if strings.Contains(got, l) {
					t.Errorf("%s, %s: %q leaked in %q", c.name, rd.name, l, got)
				}
			}
		}
		if got := s.String(c.in); c.want != "" && got != c.want {
			t.Errorf("%s: String gave %q, want %q", c.name, got, c.want)
		}
		b := []byte(c.in)
		s.Bytes(b)
		if c.want != "" && string(b) != c.want {
			t.Errorf("%s: Bytes gave %q, want %q", c.name, b, c.want)
		}
	}
}

// A caller that injected a short value masks it; the automatic grant fields
// stay at MinLen, and nothing goes below MinInjectLen.
func TestScrubberMin(t *testing.T) {
	cases := []struct {
		name  string
		s     *Scrubber
		in    string
		empty bool
	}{
		{"6 bytes, default", NewScrubber("pin123"), "pin123", true},
		{"6 bytes, injected", NewScrubberMin(6, "pin123"), "pin123", false},
		{"4 bytes, injected", NewScrubberMin(MinInjectLen, "abcd"), "abcd", false},
		{"3 bytes, never", NewScrubberMin(1, "abc"), "abc", true},
		{"none", NewScrubber(), "", true},
		{"nil", nil, "", true},
	}
	for _, c := range cases {
		if c.s.Empty() != c.empty {
			t.Errorf("%s: Empty() = %v, want %v", c.name, c.s.Empty(), c.empty)
		}
		if c.empty || c.in == "" {
			continue
		}
		for name, enc := range forms(t, c.in) {
			if got := c.s.String("[" + enc + "]"); strings.Contains(got, enc) {
				t.Errorf("%s, %s: %q kept %q", c.name, name, got, enc)
			}
		}
	}
	var s *Scrubber
	h := http.Header{"X": {"v"}}
	s.Header(h)
	s.Bytes([]byte("abc"))
	if s.Contains("x") || s.String("x") != "x" || s.Body(http.NoBody) != http.NoBody {
		t.Error("a nil Scrubber must mask nothing and wrap nothing")
	}
}

func TestScrubberHeader(t *testing.T) {
	const secret = "sk-test-abcdefghijklmnop"
	s := NewScrubber(secret)
	h := http.Header{
		"Location":      {"https://x.test/cb?key=" + url.QueryEscape(secret) + "&k2=" + hex.EncodeToString([]byte(secret))},
		"X-Echo":        {"Bearer " + secret},
		"Content-Type":  {"application/json"},
		"X-Echo-Base64": {base64.StdEncoding.EncodeToString([]byte(`{"key":"` + secret + `"}`))},
	}
	s.Header(h)
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, secret) || strings.Contains(v, "736b2d74657374") {
				t.Errorf("%s: %q still holds the secret", k, v)
			}
		}
	}
	if h.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type changed to %q", h.Get("Content-Type"))
	}
}

// Clean bodies, the common case, must not allocate per Read.
func TestScrubberCleanReadsAllocateNothing(t *testing.T) {
	s := NewScrubber(hostileSecrets...)
	body := bytes.Repeat([]byte(`{"choices":[{"delta":{"content":"hello"}}]}`+"\n"), 1000)
	src := &chunkReader{}
	r := s.Body(io.NopCloser(src))
	buf := make([]byte, 32<<10)
	allocs := testing.AllocsPerRun(50, func() {
		src.b, src.n = body, 16<<10
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
		r.(*scrubReader).err = nil // reuse the reader: only Read is measured
	})
	if allocs != 0 {
		t.Errorf("%v allocations per clean body, want 0", allocs)
	}
	header := string(body[:200])
	if a := testing.AllocsPerRun(50, func() { s.Contains(header) }); a != 0 {
		t.Errorf("Contains allocates %v times, want 0", a)
	}
}
