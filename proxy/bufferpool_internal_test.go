package proxy

import (
	"bytes"
	"testing"
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
