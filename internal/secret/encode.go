package secret

import (
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strconv"
	"unicode/utf8"
)

// formsCount is how many forms appendForms adds for one value, and formsLen
// their usual total length per byte of the value (for one allocation; a
// value of escapes needs more, and append grows for it).
const (
	formsCount = 32
	formsLen   = 64
)

// appendForms appends to dst every form in which v may come back from an
// upstream, and the end offset in dst of each: an echo endpoint, an error page
// or a redirect re-encodes what it quotes, and the agent reading it can decode
// any of these. Forms may repeat; the caller deduplicates.
func appendForms(dst []byte, ends []int, v string) ([]byte, []int) {
	add := func(b []byte) {
		dst = b
		ends = append(ends, len(dst))
	}
	add(append(dst, v...))
	add(hex.AppendEncode(dst, []byte(v)))
	h := hex.AppendEncode(dst, []byte(v))
	toUpperHex(h[len(dst):])
	add(h)
	// Most values (API keys, tokens) are all unreserved characters, which
	// no escaping form changes: skip those forms, as building is per request.
	plain := true
	for i := 0; i < len(v) && plain; i++ {
		plain = keepUnreserved(v[i])
	}
	if !plain {
		// Go's %q, as an error or log line quotes a value.
		q := strconv.AppendQuote(dst, v)
		add(append(q[:len(dst)], q[len(dst)+1:len(q)-1]...))
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		// The whole value encoded alone, padded and not: a Basic credential,
		// or a value echoed as the only thing in a base64 field.
		add(enc.AppendEncode(dst, []byte(v)))
		add(enc.WithPadding(base64.NoPadding).AppendEncode(dst, []byte(v)))
		for align := range 3 {
			n := len(dst)
			run := appendBase64Run(dst, enc, v, align)
			add(run)
			// The same run less a quantum at each end: an echo of a window
			// cut from the blob (a log line, a truncated field) still holds
			// it. Masking it leaves at most 4 bytes at each end of v.
			if r := run[n:]; len(r) >= 16 {
				add(append(dst, r[4:len(r)-4]...))
			}
		}
	}
	for _, lower := range []bool{false, true} {
		add(appendEscape(dst, v, func(byte) bool { return false }, lower))
		if plain {
			continue
		}
		add(appendHexCase(dst, url.QueryEscape(v), lower))
		add(appendHexCase(dst, url.PathEscape(v), lower))
		add(appendEscape(dst, v, keepUnreserved, lower))
		add(appendEscape(dst, v, keepComponent, lower))
	}
	for _, f := range []jsonForm{
		{all: true}, {all: true, upper: true},
		{html: true}, {}, {ascii: true},
		{html: true, slash: true}, {slash: true}, {ascii: true, slash: true},
	} {
		if plain && !f.all {
			break
		}
		add(appendJSON(dst, v, f))
	}
	return dst, ends
}

// appendBase64Run appends the encoding of v as it appears at byte offset
// align (mod 3) inside a larger base64 blob, without the characters at each
// edge that mix v's bits with its neighbours' (or are padding): those differ
// from blob to blob. What stays leaks at most 4 bits of v's first and last
// byte, so the masked run leaves v unrecoverable.
func appendBase64Run(dst []byte, enc *base64.Encoding, v string, align int) []byte {
	total := align + len(v)
	var src [64]byte
	buf := src[:0]
	if total+2 > len(src) {
		buf = make([]byte, 0, total+2)
	}
	buf = append(buf, make([]byte, align)...)
	buf = append(buf, v...)
	buf = append(buf, 0, 0)[:(total+2)/3*3]
	n := len(dst)
	dst = enc.AppendEncode(dst, buf)
	// Dropped at the start: align 1 leaves char 1 mixed, align 2 char 2.
	// At the end: a last group with 1 byte of v has 1 clean char, with 2 has 2.
	head := [3]int{0, 2, 3}[align]
	tail := [3]int{0, 3, 2}[total%3]
	if len(dst)-n-tail-head <= 0 {
		return dst[:n]
	}
	copy(dst[n:], dst[n+head:len(dst)-tail])
	return dst[:len(dst)-tail-head]
}

func toUpperHex(hexed []byte) {
	for i, c := range hexed {
		if 'a' <= c && c <= 'f' {
			hexed[i] = c - ('a' - 'A')
		}
	}
}

// appendHexCase appends s, a percent-escaped string (upper-case hex, as Go
// writes it), with the hex digits after each '%' lower-cased if lower.
func appendHexCase(dst []byte, s string, lower bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if lower && i > 0 && (s[i-1] == '%' || (i > 1 && s[i-2] == '%')) && 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// keepUnreserved is RFC 3986's unreserved set: what a strict encoder
// (Python's quote(safe="")) leaves alone, writing a space as %20.
func keepUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// keepComponent is what JavaScript's encodeURIComponent leaves alone.
func keepComponent(c byte) bool {
	return keepUnreserved(c) || c == '!' || c == '*' || c == '\'' || c == '(' || c == ')'
}

func appendEscape(dst []byte, v string, keep func(byte) bool, lower bool) []byte {
	digits := "0123456789ABCDEF"
	if lower {
		digits = "0123456789abcdef"
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; keep(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', digits[c>>4], digits[c&15])
		}
	}
	return dst
}

// jsonForm is one way a JSON encoder writes a string: html is
// encoding/json's default (<, >, & as \u003c…), ascii escapes every non-ASCII
// rune (Python's and PHP's default), slash writes / as \/ (PHP), and all
// escapes every rune as \uXXXX (hand-built evasion), upper with A-F.
type jsonForm struct{ html, ascii, slash, all, upper bool }

// appendJSON appends v as the body of a JSON string in form f. With html
// and nothing else it is exactly what encoding/json writes between the quotes.
func appendJSON(dst []byte, v string, f jsonForm) []byte {
	for i := 0; i < len(v); {
		r, size := utf8.DecodeRuneInString(v[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			// Invalid UTF-8: encoding/json writes \ufffd.
			dst = appendU(dst, utf8.RuneError, f.upper)
		case f.all:
			dst = appendU(dst, r, f.upper)
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r == '\b':
			dst = append(dst, '\\', 'b')
		case r == '\f':
			dst = append(dst, '\\', 'f')
		case r == '/' && f.slash:
			dst = append(dst, '\\', '/')
		case r < 0x20, f.html && (r == '<' || r == '>' || r == '&'),
			r == '\u2028', r == '\u2029', f.ascii && r >= utf8.RuneSelf:
			dst = appendU(dst, r, f.upper)
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

// appendU writes r as \uXXXX, or as a surrogate pair beyond the BMP.
func appendU(dst []byte, r rune, upper bool) []byte {
	digits := "0123456789abcdef"
	if upper {
		digits = "0123456789ABCDEF"
	}
	one := func(dst []byte, u rune) []byte {
		return append(dst, '\\', 'u', digits[u>>12&15], digits[u>>8&15], digits[u>>4&15], digits[u&15])
	}
	if r > 0xFFFF {
		r -= 0x10000
		return one(one(dst, 0xD800+r>>10), 0xDC00+r&0x3FF)
	}
	return one(dst, r)
}
