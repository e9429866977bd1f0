package hostile

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// TestCancelledRequestsReleased: 100 agents whose upstream never answers
// hang up after 1 s; the proxy's goroutines and fds return near baseline.
func TestCancelledRequestsReleased(t *testing.T) {
	var up *upstream
	up = startUpstream(t, "127.77.8.1:0", true, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-up.done:
		}
	})
	p := startProc(t, procOpts{Env: secretsEnv, Pprof: true, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	baseG, baseFD := p.goroutines(), p.fds()
	if baseG < 0 {
		t.Fatalf("expected /debug/pprof/goroutine?debug=1 with the admin token under --pprof; could not read it")
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.proxyAddr, 10*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			hang(c, p, up)
		}()
	}
	wg.Wait()
	var g, fd int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if g, fd = p.goroutines(), p.fds(); g <= baseG+20 && fd <= baseFD+10 {
			break
		}
	}
	t.Logf("goroutines %d -> %d, fds %d -> %d", baseG, g, baseFD, fd)
	if g > baseG+20 {
		t.Errorf("after 100 cancelled requests: expected goroutines back near %d, still %d after 30 s", baseG, g)
	}
	if fd > baseFD+10 {
		t.Errorf("after 100 cancelled requests: expected fds back near %d, still %d after 30 s", baseFD, fd)
	}
}

// hang CONNECTs, handshakes, sends one request and hangs up after 1 s.
func hang(c net.Conn, p *proc, up *upstream) {
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", up.addr, up.addr)
	buf := make([]byte, 1024)
	n, _ := c.Read(buf)
	if !bytes.Contains(buf[:n], []byte(" 200 ")) {
		return
	}
	tc := tlsClient(c, p, up.ip)
	if tc.Handshake() != nil {
		return
	}
	_, _ = tc.Write([]byte(get(up.addr, "/v1/slow")))
	time.Sleep(time.Second)
	tc.Close()
}

// TestNonReadingStreamsBounded: 100 SSE streams of 64 KiB events whose
// agents never read keep the proxy's RSS bounded, and it keeps serving.
func TestNonReadingStreamsBounded(t *testing.T) {
	event := []byte("data: " + strings.Repeat("x", 64<<10) + "\n\n")
	var up *upstream
	up = startUpstream(t, "127.77.8.2:0", true, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/stream" {
			_, _ = w.Write([]byte("ok"))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; i < 4096; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-up.done:
				return
			default:
			}
			_ = rc.SetWriteDeadline(time.Now().Add(60 * time.Second))
			if _, err := w.Write(event); err != nil || rc.Flush() != nil {
				return
			}
		}
	})
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		a := p.tlsTunnel(t, up.addr, up.ip)
		a.write(t, get(up.addr, "/v1/stream"))
		conns = append(conns, a.conn)
	}
	var peak int64
	for i := 0; i < 20; i++ {
		time.Sleep(500 * time.Millisecond)
		peak = max(peak, p.rss())
	}
	t.Logf("100 non-reading SSE streams: peak RSS %d MiB", peak>>20)
	if peak > 200<<20 {
		t.Errorf("100 non-reading SSE streams: expected RSS under 200 MiB, it peaked at %d MiB", peak>>20)
	}
	resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/ping"))
	if resp.StatusCode != 200 {
		t.Errorf("a normal request beside 100 stalled streams: expected 200, got %d %q", resp.StatusCode, trunc(body))
	}
}

// TestManyHosts: 2,000 CONNECTs to distinct unruled hosts (denied) and 500
// to distinct ruled IPs (a leaf minted each): alive, RSS bounded.
func TestManyHosts(t *testing.T) {
	var hosts []string
	for i := 0; i < 500; i++ {
		hosts = append(hosts, fmt.Sprintf("127.79.%d.%d", i/250, i%250+1))
	}
	p := startProc(t, procOpts{Env: secretsEnv, YAML: "unmatched: deny\n" + credentialsYAML + "rules:\n" + bearerRule("many", strings.Join(hosts, ", "), "", "")})
	work := make(chan func(), 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[string]int{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				f()
			}
		}()
	}
	fail := func(what string) { mu.Lock(); failures[what]++; mu.Unlock() }
	for i := 0; i < 2000; i++ {
		target := fmt.Sprintf("127.78.%d.%d:443", i/250, i%250+1)
		work <- func() {
			if st := connectStatus(p, target, ""); st != http.StatusForbidden {
				fail(fmt.Sprintf("unruled CONNECT: status %d, expected 403", st))
			}
		}
	}
	for _, h := range hosts {
		work <- func() {
			if st := connectStatus(p, h+":443", h); st != 200 {
				fail(fmt.Sprintf("ruled CONNECT+TLS: status %d, expected 200 and a handshake", st))
			}
		}
	}
	close(work)
	wg.Wait()
	for what, n := range failures {
		t.Errorf("%d times: %s", n, what)
	}
	rss := p.rss()
	t.Logf("after 2,500 distinct hosts: RSS %d MiB", rss>>20)
	if rss > 150<<20 {
		t.Errorf("after 2,500 distinct hosts: expected RSS under 150 MiB, got %d MiB", rss>>20)
	}
	if st, _, err := p.admin("GET", "/healthz", false); err != nil || st != 200 {
		t.Errorf("after 2,500 distinct hosts: expected /healthz 200, got %d %v", st, err)
	}
}

// connectStatus CONNECTs to target; with tlsHost it also completes a TLS
// handshake (status -2 if that fails).
func connectStatus(p *proc, target, tlsHost string) int {
	c, err := net.DialTimeout("tcp", p.proxyAddr, 10*time.Second)
	if err != nil {
		return -1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	var st int
	fmt.Sscanf(string(buf[:n]), "HTTP/1.1 %d", &st)
	p.record("CONNECT "+target, buf[:n])
	if st != 200 || tlsHost == "" {
		return st
	}
	if tlsClient(c, p, tlsHost).Handshake() != nil {
		return -2
	}
	return st
}

// rss is the process's resident set in bytes, or -1.
func (p *proc) rss() int64 {
	rss, _, err := proctest.Memory(p.child.PID())
	if err != nil {
		return -1
	}
	return rss
}

// fds is the process's open file descriptors, or -1.
func (p *proc) fds() int {
	n, err := proctest.FDs(p.child.PID())
	if err != nil {
		return -1
	}
	return n
}

// goroutines reads the total from /debug/pprof/goroutine (needs --pprof), or -1.
func (p *proc) goroutines() int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := p.child.Goroutines(ctx, adminToken)
	if err != nil {
		return -1
	}
	return n
}
