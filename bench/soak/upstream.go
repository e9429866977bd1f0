package main

import (
	"crypto/tls"
	"encoding/json"
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

// SSE stream shape: an event at once, then every sseGap for about 2 s.
const (
	sseEvents = 40
	sseGap    = 50 * time.Millisecond
)

// chatResponse is a ~1 KiB JSON answer.
var chatResponse = []byte(`{"id":"chatcmpl-soak","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 34) + `"},"finish_reason":"stop"}]}` + "\n")

// upstream is the API credproxy forwards to: HTTPS on 127.0.0.1 with its
// own CA. Every request must carry the real key or it gets a 401, which
// the soak counts: a proxy that forgot to inject fails loudly.
type upstream struct {
	srv          *http.Server
	addr         string // 127.0.0.1:port
	caFile       string
	wantAuth     string
	done         chan struct{} // closed by close: releases hanging handlers
	unauthorized atomic.Int64
	hanging      atomic.Int64 // /v1/hang handlers still waiting for their client
}

// startUpstream makes a CA in dir with proxy.LoadOrCreateCA, signs a leaf
// for 127.0.0.1 with it and serves on a loopback port.
func startUpstream(dir, key string) (*upstream, error) {
	certFile := filepath.Join(dir, "upstream-ca.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, filepath.Join(dir, "upstream-ca-key.pem"))
	if err != nil {
		return nil, err
	}
	leaf, err := ca.SignLeaf("api.soak.test", "127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("upstream leaf: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String(), caFile: certFile, wantAuth: "Bearer " + key, done: make(chan struct{})}
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(u.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*leaf}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = u.srv.ServeTLS(ln, "", "") }()
	return u, nil
}

func (u *upstream) close() {
	close(u.done)
	_ = u.srv.Close()
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if auth != u.wantAuth {
		u.unauthorized.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid api key"}`+"\n")
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	switch r.URL.Path {
	case "/v1/stream":
		u.stream(w, r)
	case "/v1/hang":
		u.hang(r)
	case "/v1/echo":
		// Reflects the injected credential: credproxy must mask it.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-Authorization", auth)
		_ = json.NewEncoder(w).Encode(map[string]string{"authorization": auth})
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(chatResponse)
	}
}

// stream sends sseEvents events sseGap apart, the first at once, and
// stops when the client (credproxy) goes away.
func (u *upstream) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	t := time.NewTicker(sseGap)
	defer t.Stop()
	for i := range sseEvents {
		if i > 0 {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			case <-u.done:
				return
			}
		}
		_, _ = fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"token %d\"}}]}\n\n", i)
		if rc.Flush() != nil {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// hang never answers: it returns when its client goes away (credproxy
// cancelling the upstream request) or the upstream closes.
func (u *upstream) hang(r *http.Request) {
	u.hanging.Add(1)
	defer u.hanging.Add(-1)
	select {
	case <-r.Context().Done():
	case <-u.done:
	}
}
