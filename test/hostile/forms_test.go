package hostile

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
)

// secretForm is one encoding of a secret an upstream might echo.
type secretForm struct{ name, text string }

// secretForms lists the encodings of v scanned for: raw, base64 in both
// alphabets (padded, unpadded, and the part a blob carries when v starts at
// offset 1 or 2 of it), hex, percent-encodings and JSON \u escapes.
func secretForms(v string) []secretForm {
	b := []byte(v)
	forms := []secretForm{
		{"raw", v},
		{"base64-std", base64.StdEncoding.EncodeToString(b)},
		{"base64-url", base64.URLEncoding.EncodeToString(b)},
		{"base64-std-raw", base64.RawStdEncoding.EncodeToString(b)},
		{"base64-url-raw", base64.RawURLEncoding.EncodeToString(b)},
		{"hex", hex.EncodeToString(b)},
		{"HEX", strings.ToUpper(hex.EncodeToString(b))},
		{"query-escape", url.QueryEscape(v)},
		{"path-escape", url.PathEscape(v)},
		{"percent-all", percentAll(v, "%%%02X")},
		{"percent-all-lower", percentAll(v, "%%%02x")},
		{"json-u", percentAll(v, `\u%04x`)},
		{"json-U", percentAll(v, `\u%04X`)},
	}
	for off := 1; off <= 2; off++ {
		for alpha, enc := range map[string]*base64.Encoding{"std": base64.RawStdEncoding, "url": base64.RawURLEncoding} {
			blob := enc.EncodeToString(append(bytes.Repeat([]byte{'A'}, off), b...))
			// The first quantum mixes the prefix in and the last may be
			// partial; what is between is fixed by v alone.
			if inner := blob[4 : len(blob)-4]; len(inner) >= 8 {
				forms = append(forms, secretForm{fmt.Sprintf("base64-%s-offset%d", alpha, off), inner})
			}
		}
	}
	return forms
}

func percentAll(v, format string) string {
	var sb strings.Builder
	for _, c := range []byte(v) {
		fmt.Fprintf(&sb, format, c)
	}
	return sb.String()
}

// findSecret returns the first form of v found in data and its index.
func findSecret(data []byte, v string) (string, int) {
	for _, f := range secretForms(v) {
		if i := bytes.Index(data, []byte(f.text)); i >= 0 {
			return f.name, i
		}
	}
	return "", -1
}

// leakIn returns a description of the first form of any secret in data, or "".
func leakIn(data []byte, secrets ...string) string {
	for _, s := range secrets {
		if form, i := findSecret(data, s); i >= 0 {
			return fmt.Sprintf("%s form of a secret at byte %d: %q", form, i, excerpt(data, i))
		}
	}
	return ""
}
