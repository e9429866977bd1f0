package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// The value may sit at any offset inside a larger base64 blob (an echoed
// JSON document, a Basic credential, a JWT-like token): whatever the
// alignment and alphabet, decoding the scrubbed blob must not give back any
// 6 bytes of it in a row.
func TestScrubberBase64AnyOffset(t *testing.T) {
	secrets := append([]string{"abcdefgh", "sk-test-0123456789abcdefghijklmnop"}, hostileSecrets...)
	prefixes := []string{"", "u", "us", "use", "user:", `{"key":"`, "x\x00\xff", "Bearer "}
	suffixes := []string{"", "}", `"}`, "abc", "\n"}
	encs := map[string]*base64.Encoding{
		"std": base64.StdEncoding, "url": base64.URLEncoding,
		"std raw": base64.RawStdEncoding, "url raw": base64.RawURLEncoding,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, secret := range secrets {
		s := NewScrubber(secret)
		for _, pre := range prefixes {
			for _, post := range suffixes {
				for name, enc := range encs {
					blob := enc.EncodeToString([]byte(pre + secret + post))
					body := "data=" + blob + "&z"
					got := readAllWith(t, s, &randChunks{b: []byte(body), max: 9, rng: rng}, 5)
					if len(got) != len(body) {
						t.Fatalf("%q in %q%q, %s: length %d -> %d", secret, pre, post, name, len(body), len(got))
					}
					dec := lenientDecode(got[5:5+len(blob)], enc)
					if w, ok := window(dec, secret, 6); ok {
						t.Errorf("%q in %q…%q, %s: scrubbed %q still decodes to %q", secret, pre, post, name, got, w)
					}
				}
			}
		}
	}
}

// lenientDecode decodes b64 as an agent would try to: with what the mask
// replaced read as zero bits.
func lenientDecode(b64 string, enc *base64.Encoding) []byte {
	b := []byte(strings.TrimRight(b64, "="))
	for i, c := range b {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_", rune(c)) {
			b[i] = 'A'
		}
	}
	if len(b)%4 == 1 {
		b = b[:len(b)-1]
	}
	raw := base64.RawStdEncoding
	if enc == base64.URLEncoding || enc == base64.RawURLEncoding {
		raw = base64.RawURLEncoding
	}
	out, err := raw.DecodeString(string(b))
	if err != nil {
		panic(err)
	}
	return out
}

// window reports a run of n bytes of secret found in b.
func window(b []byte, secret string, n int) (string, bool) {
	for i := 0; i+n <= len(secret); i++ {
		if bytes.Contains(b, []byte(secret[i:i+n])) {
			return secret[i : i+n], true
		}
	}
	return "", false
}

// appendJSON's default forms are exactly what encoding/json writes, for
// every kind of rune and for invalid UTF-8.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "/", "<", ">", "&", `"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f",
		"é", "☃", "😀", "\u2028", "\u2029", "\xff", "\xe2\x82", "\ufffd", " ", "+", "%"}
	for range 2000 {
		var v strings.Builder
		for range 1 + rng.IntN(12) {
			v.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		want, _ := json.Marshal(v.String())
		if got := appendJSON(nil, v.String(), jsonForm{html: true}); string(got) != string(want[1:len(want)-1]) {
			t.Fatalf("%q: appendJSON %s, encoding/json %s", v.String(), got, want)
		}
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		_ = e.Encode(v.String())
		want = bytes.TrimSpace(buf.Bytes())
		if got := appendJSON(nil, v.String(), jsonForm{}); string(got) != string(want[1:len(want)-1]) {
			t.Fatalf("%q: appendJSON %s, encoding/json without HTML escaping %s", v.String(), got, want)
		}
		// Every other form must decode back to what encoding/json's does.
		var same string
		_ = json.Unmarshal(want, &same)
		for _, f := range []jsonForm{{ascii: true}, {slash: true}, {all: true}, {all: true, upper: true}} {
			var back string
			enc := appendJSON([]byte{'"'}, v.String(), f)
			if err := json.Unmarshal(append(enc, '"'), &back); err != nil || back != same {
				t.Fatalf("%q in form %+v: %s decodes to %q, %v", v.String(), f, enc, back, err)
			}
		}
	}
}
