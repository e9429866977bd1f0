package deploy

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
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/netnstest"
	"github.com/credproxy/credproxy/proxy"
)

// upstreams is the fake internet: one address, an HTTPS and a plain HTTP
// server answering for every API name, recording what they saw.
type upstreams struct {
	caFile string
	mu     sync.Mutex
	seen   []seenRequest
}

type seenRequest struct {
	TLS                       bool
	Host, Path, Authorization string
}

func (u *upstreams) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// credentialSeen counts requests that carried the real key.
func (u *upstreams) credentialSeen() int {
	n := 0
	for _, r := range u.requests() {
		if strings.Contains(r.Authorization, podTestKey) {
			n++
		}
	}
	return n
}

func startUpstreams(t *testing.T, inet *netnstest.NS, dir string) *upstreams {
	t.Helper()
	u := &upstreams{caFile: filepath.Join(dir, "upstream-ca.pem")}
	ca, _, err := proxy.LoadOrCreateCA(u.caFile, filepath.Join(dir, "upstream-ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignLeaf("api.openai.com", "unruled.example.test", internetIP)
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{TLS: r.TLS != nil, Host: r.Host, Path: r.URL.Path, Authorization: r.Header.Get("Authorization")})
		u.mu.Unlock()
		if r.URL.Path == "/v1/chat/completions" {
			chatCompletion(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"gpt-test","object":"model","created":0,"owned_by":"test"}]}`)
	})
	for _, l := range []struct {
		port string
		tls  bool
	}{{"443", true}, {"80", false}} {
		ln := inet.Listen(t, "tcp", net.JoinHostPort(internetIP, l.port))
		if l.tls {
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*leaf}, NextProtos: []string{"h2", "http/1.1"}})
		}
		// A client that rejects a certificate aborts its handshake: not news.
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	return u
}

// podReply is what the fake chat completions API answers, whole or streamed.
const podReply = "hello from the pod's upstream"

// chatCompletion answers the openai SDK's chat.completions.create, as JSON
// or, with "stream": true, as server-sent events.
func chatCompletion(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":0,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, podReply)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", podReply)
	fmt.Fprint(w, "data: [DONE]\n\n")
}
