package secret

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// FuzzScrubberBody: whatever the body, secret and chunking, the length stays
// and no form of the secret survives, whether the body held it or not.
func FuzzScrubberBody(f *testing.F) {
	f.Add([]byte("before sk-test-abcdefghijklmnop after"), "sk-test-abcdefghijklmnop", uint64(1), uint16(3))
	f.Add([]byte("c2stdGVzdC1hYmNkZWZnaGlqa2xtbm9w"), "sk-test-abcdefghijklmnop", uint64(2), uint16(1))
	f.Add([]byte(`{"a":"sk\/te+st&\u003ck"}`), `sk/te+st&<k`, uint64(3), uint16(7))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaa"), "aaaaaaaa", uint64(4), uint16(2))
	f.Add([]byte(""), "user:pass word", uint64(5), uint16(1))
	f.Fuzz(func(t *testing.T, body []byte, secret string, seed uint64, form uint16) {
		// Size caps keep each run fast: holding back a tail costs the longest
		// form's length per read, and the fuzzer reads in tiny chunks.
		if len(secret) < MinLen || len(secret) > 64 || len(body) > 4<<10 || isOwnMask(secret) {
			t.Skip()
		}
		s := NewScrubber(secret)
		fs := forms(t, secret)
		names := make([]string, 0, len(fs))
		for n := range fs {
			names = append(names, n)
		}
		// Plant one form of the secret in the body, at a random place.
		rng := rand.New(rand.NewPCG(seed, uint64(form)))
		slices.Sort(names)
		enc := fs[names[int(form)%len(names)]]
		at := rng.IntN(len(body) + 1)
		planted := string(body[:at]) + enc + string(body[at:])
		for _, in := range []string{string(body), planted} {
			got := readAllWith(t, s, &randChunks{b: []byte(in), max: 1 + rng.IntN(64), rng: rng}, 1+rng.IntN(100))
			if len(got) != len(in) {
				t.Fatalf("length %d -> %d", len(in), len(got))
			}
			for n, e := range fs {
				if survived(in, got, e) {
					t.Fatalf("%s form %q of the secret survived in %q", n, e, got)
				}
			}
			// Reads may cut one mask in two ("****" then "[redacted]"), but
			// the bytes masked must be String's.
			if want := s.String(in); stars(got) != stars(want) {
				t.Fatalf("Body gave %q, String %q", got, want)
			}
		}
	})
}

// FuzzScrubberString: String masks every form and keeps the length; text
// without the secret comes back unchanged.
func FuzzScrubberString(f *testing.F) {
	f.Add("error: key sk-test-abcdefghijklmnop rejected", "sk-test-abcdefghijklmnop")
	f.Add("url=https://x/?k=user%3Apass+word", "user:pass word")
	f.Add("plain text", "sk-test-abcdefgh")
	f.Fuzz(func(t *testing.T, msg, secret string) {
		if len(secret) < MinLen || len(secret) > 64 || len(msg) > 4<<10 || isOwnMask(secret) {
			t.Skip()
		}
		s := NewScrubber(secret)
		got := s.String(msg)
		if len(got) != len(msg) {
			t.Fatalf("length %d -> %d", len(msg), len(got))
		}
		for n, e := range forms(t, secret) {
			if survived(msg, got, e) {
				t.Fatalf("%s form %q survived in %q", n, e, got)
			}
		}
		if !s.Contains(msg) && got != msg {
			t.Fatalf("no secret, yet %q became %q", msg, got)
		}
		b := []byte(msg)
		s.Bytes(b)
		if string(b) != got {
			t.Fatalf("Bytes gave %q, String %q", b, got)
		}
	})
}

// survived reports an occurrence of e in out that masking left as it was
// in in. One that a mask made (a secret "*aaaaaaa" beside a mask's last
// star) shows nothing of the input, so it does not count.
func survived(in, out, e string) bool {
	for i := 0; ; i++ {
		j := strings.Index(out[i:], e)
		if j < 0 {
			return false
		}
		i += j
		if in[i:i+len(e)] == out[i:i+len(e)] {
			return true
		}
	}
}

// isOwnMask reports a secret written only in the mask's own characters
// ("**********"): a mask, whole or split across reads into runs of '*', can
// come out equal to it, so nothing can tell masked from unmasked.
func isOwnMask(secret string) bool {
	return strings.Trim(secret, "[]*acdert") == "" // the bytes of "[redacted]" and '*'

}

func stars(s string) string { return strings.ReplaceAll(s, Redacted, "**********") }
