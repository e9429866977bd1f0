package secret

import (
	"io"
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
