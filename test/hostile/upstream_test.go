package hostile

import (
	"bufio"
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA signs the upstreams' leaves; credproxy trusts it via caFiles.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
}

func newTestCA(dir string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hostile upstream test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	f := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, certFile: f}, nil
}

// leaf signs a server certificate for the IP.
func (ca *testCA) leaf(ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: ip},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// seenReq is what an upstream logged of one request.
type seenReq struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
}

// upstream is a real server on a loopback IP that logs every request.
type upstream struct {
	addr string // ip:port
	ip   string
	port string
	mu   sync.Mutex
	reqs []seenReq
	done chan struct{} // closed at cleanup: handlers that hang return
}

func (u *upstream) log(r *http.Request, body []byte) {
	u.mu.Lock()
	u.reqs = append(u.reqs, seenReq{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(body)})
	u.mu.Unlock()
}

func (u *upstream) seen() []seenReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenReq(nil), u.reqs...)
}

// sawSecret reports a logged request that carried any form of a secret in
// its request line, headers or body.
func (u *upstream) sawSecret(secrets ...string) string {
	for _, r := range u.seen() {
		var b bytes.Buffer
		b.WriteString(r.Method + " " + r.URI + "\n")
		_ = r.Header.Write(&b)
		b.WriteString(r.Body)
		if l := leakIn(b.Bytes(), secrets...); l != "" {
			return r.Method + " " + r.URI + ": " + l
		}
	}
	return ""
}

func listenOn(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return ln
}

// startUpstream serves h on addr (ip:0 for any port), over TLS with a leaf
// from the test CA when tlsOn; h2 is offered unless h1only.
func startUpstream(t *testing.T, addr string, tlsOn, h1only bool, h http.HandlerFunc) *upstream {
	t.Helper()
	ln := listenOn(t, addr)
	u := &upstream{addr: ln.Addr().String(), done: make(chan struct{})}
	u.ip, u.port, _ = net.SplitHostPort(u.addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		_, _ = body.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<20))
		u.log(r, body.Bytes())
		h(w, r)
	}), ReadHeaderTimeout: 30 * time.Second}
	if tlsOn {
		cert, err := upstreamCA.leaf(u.ip)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
		if h1only {
			cfg.NextProtos = []string{"http/1.1"}
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		}
		srv.TLSConfig = cfg
		ln = tls.NewListener(ln, cfg)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(u.done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return u
}

// startRawUpstream accepts connections on addr (TLS when tlsOn), reads each
// request head, logs it and lets fn write whatever bytes it likes.
func startRawUpstream(t *testing.T, addr string, tlsOn bool, fn func(c net.Conn, head string)) *upstream {
	t.Helper()
	ln := listenOn(t, addr)
	u := &upstream{addr: ln.Addr().String(), done: make(chan struct{})}
	u.ip, u.port, _ = net.SplitHostPort(u.addr)
	if tlsOn {
		cert, err := upstreamCA.leaf(u.ip)
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				head, ok := readRawHead(bufio.NewReader(c))
				if !ok {
					return
				}
				u.mu.Lock()
				u.reqs = append(u.reqs, seenReq{Method: "RAW", URI: head, Header: http.Header{}})
				u.mu.Unlock()
				fn(c, head)
			}()
		}
	}()
	t.Cleanup(func() { close(u.done); ln.Close(); wg.Wait() })
	return u
}

func readRawHead(br *bufio.Reader) (string, bool) {
	var sb strings.Builder
	for sb.Len() < 1<<20 {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), sb.Len() > 0
		}
		if line == "\r\n" || line == "\n" {
			return sb.String(), true
		}
	}
	return sb.String(), true
}

// startRecorder is a plain TCP listener that records every byte it receives
// and answers 200 to each request head: it sees whatever reaches it,
// well-formed or not.
func startRecorder(t *testing.T, addr string) *recorder {
	t.Helper()
	ln := listenOn(t, addr)
	r := &recorder{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return r
}

type recorder struct {
	addr string
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (r *recorder) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		r.mu.Lock()
		r.buf.WriteString(line)
		r.mu.Unlock()
		if err != nil {
			return
		}
		if line == "\r\n" || line == "\n" {
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
	}
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}
