package main

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// upstream is the API credproxy forwards to: HTTPS (HTTP/2 offered) on
// 127.0.0.1. Every request must carry the real key, or it gets a 401 that
// the load counts as an error: a bench that forgot to inject fails loudly.
type upstream struct {
	srv          *http.Server
	addr         string // 127.0.0.1:port
	wantAuth     string
	unauthorized atomic.Int64
}

// chatResponse is a ~1 KiB JSON answer, about what a short completion is.
var chatResponse = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","model":"bench-1","choices":[{"index":0,"message":{"role":"assistant","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 34) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}` + "\n")

// sseEvents is how many events a stream sends, sseGap the pause between them.
const (
	sseEvents = 5
	sseGap    = 2 * time.Millisecond
)

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
		u.stream(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(chatResponse)
}

// stream sends sseEvents server-sent events, the first one at once.
func (u *upstream) stream(w http.ResponseWriter) {
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
}
