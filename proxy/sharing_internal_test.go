package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

// A buffer back from the pool holds none of the response it last carried
// (it may have echoed a credential), and is the size ReverseProxy copies with.
func TestCopyBuffersAreZeroedOnReturn(t *testing.T) {
	var p bufferPool
	b := p.Get()
	if len(b) != 32<<10 {
		t.Fatalf("Get: %d bytes, want 32 KiB", len(b))
	}
	copy(b, "Authorization: Bearer sk-test-pooled-secret")
	p.Put(b)
	for range 100 { // sync.Pool may drop it; whatever comes back must be clean
		got := p.Get()
		if len(got) != 32<<10 || !bytes.Equal(got, make([]byte, 32<<10)) {
			t.Fatalf("a pooled buffer came back with %d bytes, not all zero", len(got))
		}
		p.Put(got)
	}
	p.Put(make([]byte, 10)) // a buffer of another size is not pooled
	if got := p.Get(); len(got) != 32<<10 {
		t.Errorf("Get after a foreign Put: %d bytes", len(got))
	}
}

// Destinations sent the same values share one scrubber (a wildcard rule's
// many hosts, one credential); each still masks exactly its own values.
func TestEchoScrubbersShared(t *testing.T) {
	e := newEchoes()
	dest := func(h string) rules.Dest {
		d, err := rules.ParseDest(h, 443)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	const key, other = "sk-test-shared-0123456789", "sk-test-other-0123456789"
	for i := range 1000 {
		e.remember(dest(fmt.Sprintf("h%d.example.test", i)), key)
	}
	first := e.scrubber(dest("h0.example.test"))
	for i := range 1000 {
		if s := e.scrubber(dest(fmt.Sprintf("h%d.example.test", i))); s != first {
			t.Fatalf("host %d has its own scrubber for the same value", i)
		}
	}
	e.remember(dest("h1.example.test"), other) // h1 now has both values
	if got := e.scrub(dest("h1.example.test"), key+" "+other); strings.Contains(got, key) || strings.Contains(got, other) {
		t.Errorf("h1 after a second value: %q, want both masked", got)
	}
	if e.scrubber(dest("h1.example.test")) == first {
		t.Error("h1's values changed but it kept the shared scrubber")
	}
	if got := e.scrub(dest("h2.example.test"), key); strings.Contains(got, key) {
		t.Errorf("h2: %q, want the key masked", got)
	}
	if got := e.scrub(dest("h2.example.test"), other); got != other {
		t.Errorf("h2 masks %q, a value never sent to it (scrubbers must not mix)", got)
	}
}
