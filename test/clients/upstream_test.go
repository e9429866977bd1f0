package clients

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCA signs leaves for the fake upstreams.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
}

func newTestCA(dir, name string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "credproxy clients test CA " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	f := filepath.Join(dir, name+"-ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, certFile: f}, nil
}

// leaf signs a server certificate for a DNS name.
func (ca *testCA) leaf(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// seenReq is what an upstream logged of one request.
type seenReq struct {
	Method, Path string
	Header       http.Header
}

// upstream is a TLS server for one real host name on a loopback port.
type upstream struct {
	name string // the real host name it stands for, e.g. api.openai.com
	addr string // 127.0.0.1:port
	gate *gate
	mu   sync.Mutex
	reqs []seenReq
}

func (u *upstream) seen() []seenReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenReq(nil), u.reqs...)
}

// header returns a header of the first logged request to path.
func (u *upstream) header(t *testing.T, path, name string) string {
	t.Helper()
	for _, r := range u.seen() {
		if r.Path == path {
			return r.Header.Get(name)
		}
	}
	t.Fatalf("%s saw no request to %s; it saw %v", u.name, path, u.seen())
	return ""
}

// startUpstream serves h over TLS for name with a leaf from ca (HTTP/2 and
// HTTP/1.1 offered). The gate's cleanup releases every waiting handler.
func startUpstream(t *testing.T, name string, ca *testCA, h http.HandlerFunc) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{name: name, addr: ln.Addr().String(), gate: newGate()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, seenReq{r.Method, r.URL.Path, r.Header.Clone()})
		u.mu.Unlock()
		h(w, r)
	}), ReadHeaderTimeout: 30 * time.Second}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, name)}, NextProtos: []string{"h2", "http/1.1"}}
	srv.TLSConfig = cfg
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() {
		u.gate.open()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return u
}

// gate holds a stream after its first chunk until the test has seen the
// client print that chunk: streaming is asserted by events, not timing.
type gate struct {
	once     sync.Once
	ch       chan struct{}
	mu       sync.Mutex
	timedOut bool
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// wait blocks until open, or gives up after 30 s and records that the
// client never showed the first chunk while the stream was held.
func (g *gate) wait(ctx context.Context) {
	select {
	case <-g.ch:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		g.mu.Lock()
		g.timedOut = true
		g.mu.Unlock()
	}
}

func (g *gate) expired() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.timedOut
}
