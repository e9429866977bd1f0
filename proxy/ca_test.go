package proxy

import (
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCAIsMintedOnceWithPrivateKey(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "sub", "ca-key.pem")
	ca, created, err := LoadOrCreateCA(cert, key)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	if _, ok := ca.cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("CA key is %T, want ECDSA (leaves inherit it; RSA signing is ~300x slower)", ca.cert.PrivateKey)
	}
	if strings.Contains(string(ca.PEM()), "PRIVATE") {
		t.Error("PEM() exposes the private key")
	}
	again, created, err := LoadOrCreateCA(cert, key)
	if err != nil || created || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("second start should load the same CA: created=%v err=%v", created, err)
	}
}

func TestCARefusesHalfAPair(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if _, _, err := LoadOrCreateCA(cert, key); err != nil {
		t.Fatal(err)
	}
	os.Remove(key)
	_, _, err := LoadOrCreateCA(cert, key)
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("only the certificate present: err = %v, want a refusal naming %s", err, key)
	}
	if _, statErr := os.Stat(key); statErr == nil {
		t.Error("a new key was written next to the old certificate")
	}
}

func TestLeafCacheSignsOncePerHostUnderConcurrency(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := LoadOrCreateCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	lc, err := newLeafCache(ca, 2, nopObserver{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	certs := make([]any, 50)
	for i := range certs {
		wg.Go(func() {
			c, err := lc.get("api.example.test")
			if err != nil {
				t.Error(err)
			}
			certs[i] = c
		})
	}
	wg.Wait()
	for _, c := range certs[1:] {
		if c != certs[0] {
			t.Fatal("concurrent cold requests for one host got different leaves: signed more than once")
		}
	}
	// Bounded: a third host evicts the least recently used.
	lc.get("b.example.test")
	lc.get("c.example.test")
	if n := lc.cache.Len(); n != 2 {
		t.Errorf("cache holds %d leaves, want its bound 2", n)
	}
}

func TestLeafIsRenewedNearExpiry(t *testing.T) {
	dir := t.TempDir()
	ca, _, _ := LoadOrCreateCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	lc, _ := newLeafCache(ca, 8, nopObserver{})
	now := time.Now()
	lc.now = func() time.Time { return now }
	first, _ := lc.get("api.example.test")
	lc.now = func() time.Time { return now.Add(leafLifetime - leafRefresh/2) }
	second, _ := lc.get("api.example.test")
	if first == second {
		t.Fatal("a leaf within a day of expiry was served again instead of re-minted")
	}
	if !second.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("the new leaf does not outlive the old one")
	}
}
