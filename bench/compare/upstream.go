package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/credproxy/credproxy/proxy"
)

// The upstream, its PKI and the request body are copied from bench/load
// (a main package, so not importable), trimmed to what this command needs.

// requestBody is a ~1 KiB chat request.
var requestBody = []byte(`{"model":"bench-1","messages":[{"role":"user","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 36) + `"}],"stream":false}`)

// chatResponse is a ~1 KiB JSON answer.
var chatResponse = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","model":"bench-1","choices":[{"index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 34) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}` + "\n")

// sseEvents is how many events a stream sends, sseGap the pause between them.
const (
	sseEvents = 5
	sseGap    = 2 * time.Millisecond
)

// upstreamPKI is the upstream's own CA: the direct client trusts it, and
// both proxies trust it through their upstream CA setting.
type upstreamPKI struct {
	caFile string
	pool   *x509.CertPool
	leaf   tls.Certificate
}

func newUpstreamPKI(dir string) (*upstreamPKI, error) {
	certFile, keyFile := filepath.Join(dir, "upstream-ca.pem"), filepath.Join(dir, "upstream-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.SignLeaf("api.bench.test", "127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("upstream leaf: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	return &upstreamPKI{caFile: certFile, pool: pool, leaf: *leaf}, nil
}

// upstream is HTTPS (HTTP/2 offered) on 127.0.0.1. A request without the
// real key gets a 401, which the load counts as an error.
type upstream struct {
	srv          *http.Server
	addr         string
	wantAuth     string
	unauthorized atomic.Int64
}

func startUpstream(cert tls.Certificate, key string) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String(), wantAuth: "Bearer " + key}
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(u.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = u.srv.ServeTLS(ln, "", "") }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != u.wantAuth {
		u.unauthorized.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid api key"}`+"\n")
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/v1/stream" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for i := range sseEvents {
			if i > 0 {
				time.Sleep(sseGap)
			}
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"token"}}]}`+"\n\n")
			if rc.Flush() != nil {
				return
			}
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(chatResponse)
}
