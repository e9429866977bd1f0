// Command bare is the floor credproxy is compared with: a minimal goproxy
// v1.9.3 MITM proxy that injects one header, and nothing else (no rules,
// leases, masking, limits or audit). bench/load -compare builds it and runs
// it as its own process, so its CPU and memory are read from /proc exactly
// as credproxy's are.
//
//	BARE_API_KEY=sk-… bare -ca ca.pem -ca-key ca-key.pem -upstream-ca up.pem -host 127.0.0.1:8443
//
// It prints "listening ADDR" (and "pprof ADDR" with -pprof) on stdout once
// it serves. It never uses goproxy's built-in CA: it signs leaves with the
// ECDSA P-256 CA it is given.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
)

func main() {
	caFile := flag.String("ca", "", "CA certificate (PEM) that signs the MITM leaves")
	caKey := flag.String("ca-key", "", "its private key (PEM)")
	upCA := flag.String("upstream-ca", "", "CA certificate (PEM) the upstream's certificate chains to")
	host := flag.String("host", "", "host:port whose requests get Authorization: Bearer $BARE_API_KEY")
	listen := flag.String("listen", "127.0.0.1:0", "proxy listen address")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:0)")
	flag.Parse()
	if err := run(*caFile, *caKey, *upCA, *host, *listen, *pprofAddr); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run(caFile, caKey, upCA, host, listen, pprofAddr string) error {
	key := os.Getenv("BARE_API_KEY")
	if key == "" || host == "" || caFile == "" || caKey == "" || upCA == "" {
		return errors.New("need -ca, -ca-key, -upstream-ca, -host and BARE_API_KEY")
	}
	ca, err := tls.LoadX509KeyPair(caFile, caKey)
	if err != nil {
		return err
	}
	if ca.Leaf, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
		return err
	}
	pem, err := os.ReadFile(upCA)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no certificate", upCA)
	}

	p := goproxy.NewProxyHttpServer()
	p.Logger = log.New(io.Discard, "", 0)
	p.ConnectDial = nil // never HTTPS_PROXY from the environment
	p.KeepAcceptEncoding = true
	p.CertStore = &certCache{m: map[string]*tls.Certificate{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 16
	tr.DisableCompression = true
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	p.Tr = tr

	mitm := &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: goproxy.TLSConfigFromCA(&ca)}
	p.OnRequest().HandleConnectFunc(func(target string, _ *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		return mitm, target // AlwaysMitm, with our CA
	})
	auth := "Bearer " + key
	p.OnRequest().DoFunc(func(r *http.Request, _ *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		if r.URL.Host == host {
			r.Header.Set("Authorization", auth)
		}
		return r, nil
	})

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if pprofAddr != "" {
		pl, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(pl) }()
		fmt.Printf("pprof %s\n", pl.Addr())
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	return srv.Serve(ln)
}

// certCache is the smallest CertStorage: one leaf per host, kept forever,
// minted under the lock (so concurrent first CONNECTs sign once). Without a
// store goproxy signs a new leaf on every CONNECT.
type certCache struct {
	mu sync.Mutex
	m  map[string]*tls.Certificate
}

func (c *certCache) Fetch(host string, gen func() (*tls.Certificate, error)) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert, ok := c.m[host]; ok {
		return cert, nil
	}
	cert, err := gen()
	if err == nil {
		c.m[host] = cert
	}
	return cert, err
}
