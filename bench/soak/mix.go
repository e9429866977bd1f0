package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request kinds. The first six go through an http.Client; the rest are
// hostile and written by hand on a raw connection (hostile.go).
const (
	kindGood         = "good (keep-alive, injected)"
	kindEcho         = "echo (upstream reflects the key)"
	kindNewConn      = "new connection (no keep-alive)"
	kindSSEFull      = "SSE read to the end"
	kindSSEAbandon   = "SSE abandoned after 1 event"
	kindHang         = "hang, client cancels at 200 ms"
	kindBigHeader    = "hostile: 1 MiB header in tunnel"
	kindDotSegment   = "hostile: encoded dot-segment"
	kindHostMismatch = "hostile: Host differs from CONNECT"
	kindCleartext    = "hostile: cleartext inside CONNECT"
	kindNoHello      = "hostile: CONNECT, no ClientHello"
	kindPlainHTTP    = "hostile: plain http:// to ruled host"
)

// expected is the outcome that is not an error, for the kinds that have
// one. A hostile request's outcome is whatever credproxy chose; it is an
// error only when the soak could not get as far as the hostile part.
var expected = map[string]string{
	kindGood: "200", kindEcho: "200", kindNewConn: "200", kindSSEFull: "200", kindSSEAbandon: "200",
	kindHang: "cancelled",
}

// lane is a group of workers cycling through kinds in order.
type lane struct {
	workers int
	kinds   []string
}

// lanes is the mix: 16 workers. Good requests are most of the load; each
// slow kind has its own workers, so streams and hangs never starve it.
var lanes = []lane{
	{7, append(slices.Repeat([]string{kindGood}, 19), kindEcho)},
	{2, []string{kindNewConn}},
	{2, []string{kindSSEFull, kindSSEAbandon}},
	{1, []string{kindHang}},
	{4, []string{kindBigHeader, kindDotSegment, kindHostMismatch, kindCleartext, kindNoHello, kindPlainHTTP}},
}

// maxPerWorker bounds each worker's loop besides the deadline.
const maxPerWorker = 2_000_000

// kindResult is one kind's count, outcomes ("200", "closed", …) and errors.
type kindResult struct {
	Kind       string         `json:"kind"`
	Requests   int            `json:"requests"`
	Errors     int            `json:"errors"`
	Outcomes   map[string]int `json:"outcomes"`
	FirstError string         `json:"first_error,omitempty"`
}

type tally struct {
	mu    sync.Mutex
	kinds map[string]*kindResult
}

func (t *tally) add(kind, outcome string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.kinds[kind]
	if r == nil {
		r = &kindResult{Kind: kind, Outcomes: map[string]int{}}
		t.kinds[kind] = r
	}
	r.Requests++
	if err != nil {
		outcome = "error"
	}
	r.Outcomes[outcome]++
	if want, ok := expected[kind]; err != nil || (ok && outcome != want) {
		r.Errors++
		if r.FirstError == "" && err != nil {
			r.FirstError = err.Error()
		}
	}
}

// results lists every kind in the order of lanes.
func (t *tally) results() []kindResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []kindResult
	for _, l := range lanes {
		for _, k := range l.kinds {
			if r := t.kinds[k]; r != nil && !slices.ContainsFunc(out, func(x kindResult) bool { return x.Kind == k }) {
				out = append(out, *r)
			}
		}
	}
	return out
}

// soakEnv is what every request needs: where credproxy and the upstream
// are, the clients, and the secret scan each response goes through.
type soakEnv struct {
	proxyAddr   string // credproxy, host:port
	upAddr      string // the upstream, 127.0.0.1:port
	base        string // https://127.0.0.1:port
	roots       *x509.CertPool
	keep, fresh *http.Client
	scan        *secretScan
	bigRequest  []byte
	seq         atomic.Int64 // rotates the variants of a hostile kind
}

const placeholder = "Bearer placeholder"

func newEnv(p *proc, upAddr string, scan *secretScan) *soakEnv {
	client := func(keepAlive bool) *http.Client {
		tr := &http.Transport{
			Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: p.child.ProxyAddr()}),
			TLSClientConfig:     &tls.Config{RootCAs: p.roots},
			MaxIdleConnsPerHost: 16,
			DisableKeepAlives:   !keepAlive,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		return &http.Client{Transport: tr, Timeout: 15 * time.Second}
	}
	big := fmt.Sprintf("GET /v1/chat HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nX-Big: %s\r\n\r\n",
		upAddr, placeholder, strings.Repeat("a", 1<<20))
	return &soakEnv{proxyAddr: p.child.ProxyAddr(), upAddr: upAddr, base: "https://" + upAddr, roots: p.roots,
		keep: client(true), fresh: client(false), scan: scan, bigRequest: []byte(big)}
}

func (e *soakEnv) closeIdle() {
	e.keep.CloseIdleConnections()
	e.fresh.CloseIdleConnections()
}

// runMix runs every lane until the deadline (or ctx) and returns the tally.
func (e *soakEnv) runMix(ctx context.Context, dur time.Duration) []kindResult {
	t := &tally{kinds: map[string]*kindResult{}}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, l := range lanes {
		for w := range l.workers {
			wg.Go(func() {
				for i := 0; i < maxPerWorker && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
					kind := l.kinds[(i+w)%len(l.kinds)]
					outcome, err := e.do(ctx, kind)
					t.add(kind, outcome, err)
				}
			})
		}
	}
	wg.Wait()
	return t.results()
}

func (e *soakEnv) do(ctx context.Context, kind string) (string, error) {
	body := bytes.NewReader(chatRequest)
	switch kind {
	case kindGood:
		return e.fetch(ctx, e.keep, "POST", "/v1/chat", body)
	case kindEcho:
		return e.fetch(ctx, e.keep, "GET", "/v1/echo", nil)
	case kindNewConn:
		return e.fetch(ctx, e.fresh, "POST", "/v1/chat", body)
	case kindSSEFull, kindSSEAbandon:
		return e.sse(ctx, kind == kindSSEAbandon)
	case kindHang:
		return e.hang(ctx)
	}
	return e.hostile(ctx, kind)
}

var chatRequest = []byte(`{"model":"soak-1","messages":[{"role":"user","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 36) + `"}]}`)

func (e *soakEnv) get(ctx context.Context, c *http.Client, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", placeholder)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	e.scan.scanHeader("responses", resp.Header)
	return resp, nil
}

// fetch sends one request and reads the whole answer.
func (e *soakEnv) fetch(ctx context.Context, c *http.Client, method, path string, body io.Reader) (string, error) {
	resp, err := e.get(ctx, c, method, path, body)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	e.scan.scan("responses", b)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(resp.StatusCode), nil
}

// sse reads a stream to its [DONE], or with abandon hangs up after the
// first event: closing an unread body drops the tunnel.
func (e *soakEnv) sse(ctx context.Context, abandon bool) (string, error) {
	resp, err := e.get(ctx, e.keep, "GET", "/v1/stream", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	status := strconv.Itoa(resp.StatusCode)
	br := bufio.NewReader(io.LimitReader(resp.Body, 1<<20))
	events := 0
	for range 4 * sseEvents {
		line, err := br.ReadString('\n')
		e.scan.scan("responses", []byte(line))
		if strings.HasPrefix(line, "data: ") {
			events++
			if abandon || line == "data: [DONE]\n" {
				return status, nil
			}
		}
		if err != nil {
			return "", fmt.Errorf("stream ended after %d events: %w", events, err)
		}
	}
	return "", fmt.Errorf("stream: no [DONE] after %d lines", 4*sseEvents)
}

// hang asks for an answer that never comes and gives up after 200 ms.
func (e *soakEnv) hang(ctx context.Context) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	out, err := e.fetch(rctx, e.keep, "GET", "/v1/hang", nil)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return "cancelled", nil
	}
	return out, err
}
