package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// requestBody is a ~1 KiB chat request.
var requestBody = []byte(`{"model":"bench-1","messages":[{"role":"user","content":"` +
	strings.Repeat("lorem ipsum dolor sit amet ", 36) + `"}],"stream":false}`)

// result is one measured phase.
type result struct {
	Name       string  `json:"name"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	P50ms      float64 `json:"p50_ms"`
	P90ms      float64 `json:"p90_ms"`
	P99ms      float64 `json:"p99_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

func summarize(name string, lat []time.Duration, errs int, elapsed time.Duration, firstErr string) result {
	slices.Sort(lat)
	r := result{Name: name, Requests: len(lat) + errs, Errors: errs, Seconds: elapsed.Seconds(), FirstError: firstErr}
	r.RPS = float64(r.Requests) / elapsed.Seconds()
	r.P50ms, r.P90ms, r.P99ms = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99)
	return r
}

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(q*float64(len(sorted)-1))].Microseconds()) / 1000
}

// newClient is an agent: HTTP/1.1 (what a Go client with its own TLS
// config, and most Python clients, speak), optionally through credproxy.
func newClient(proxyURL *url.URL, roots *x509.CertPool, workers int, keepAlive bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: workers,
		DisableKeepAlives:   !keepAlive,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	if proxyURL != nil {
		tr.Proxy = http.ProxyURL(proxyURL)
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// httpLoad is a closed loop: workers each send the next request as soon as
// the last one's body is read, until dur has passed or max requests are done.
type httpLoad struct {
	name    string
	client  *http.Client
	url     string
	auth    string
	workers int
	dur     time.Duration
	max     int  // 0: no limit but dur
	keep    bool // keep idle connections afterwards (for interleaved rounds)
}

func (l httpLoad) run() result {
	lat, errs, elapsed, firstErr := l.collect()
	return summarize(l.name, lat, errs, elapsed, firstErr)
}

// collect runs the loop and returns every successful request's latency.
func (l httpLoad) collect() (lat []time.Duration, errors int, elapsed time.Duration, firstError string) {
	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr string
		issued   atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(l.dur)
	for range l.workers {
		wg.Go(func() {
			var lat []time.Duration
			var e int
			var fe string
			for time.Now().Before(deadline) && (l.max == 0 || issued.Add(1) <= int64(l.max)) {
				t0 := time.Now()
				if err := l.once(); err != nil {
					e++
					if fe == "" {
						fe = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all, errs = append(all, lat...), errs+e
			if firstErr == "" {
				firstErr = fe
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	if !l.keep {
		l.client.CloseIdleConnections()
	}
	return all, errs, elapsed, firstErr
}

func (l httpLoad) once() error {
	req, err := http.NewRequest(http.MethodPost, l.url+"/v1/chat/completions", bytes.NewReader(requestBody))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", l.auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// credproxy's JSON errors say why and never hold a value.
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != int64(len(chatResponse)) {
		err = fmt.Errorf("%d body bytes, want %d", n, len(chatResponse))
	}
	return err
}

// sseResult is the time from sending a streaming request to reading its
// first complete event, over n sequential streams on a warm connection.
type sseResult struct {
	Name     string  `json:"name"`
	Streams  int     `json:"streams"`
	Errors   int     `json:"errors"`
	FirstP50 float64 `json:"first_event_p50_ms"`
	FirstP90 float64 `json:"first_event_p90_ms"`
}

func runSSE(name string, client *http.Client, base, auth string, n int) sseResult {
	var lat []time.Duration
	errs := 0
	for range n {
		d, err := sseOnce(client, base, auth)
		if err != nil {
			errs++
			continue
		}
		lat = append(lat, d)
	}
	client.CloseIdleConnections()
	slices.Sort(lat)
	return sseResult{Name: name, Streams: n, Errors: errs, FirstP50: pct(lat, 0.5), FirstP90: pct(lat, 0.9)}
}

func sseOnce(client *http.Client, base, auth string) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/stream", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "text/event-stream")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	var first time.Duration
	events := 0
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if line == "\n" { // the blank line that ends an event
			if events++; events == 1 {
				first = time.Since(t0)
			}
		}
	}
	if events != sseEvents+1 {
		return 0, fmt.Errorf("%d events, want %d", events, sseEvents+1)
	}
	return first, nil
}

// mitmConn opens a CONNECT tunnel through credproxy to target and completes
// the TLS handshake with the leaf credproxy serves for it.
func mitmConn(ctx context.Context, proxyAddr, target string, roots *x509.CertPool) (*tls.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	// The proxy sends nothing after its answer until the client hello, so a
	// bufio.Reader here cannot swallow TLS bytes.
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: host})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS to %s through credproxy: %w", target, err)
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// roundTrip sends one GET on an established MITM connection.
func roundTrip(c *tls.Conn, target, path, auth string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+target+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := req.Write(c); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// forEach runs f(i) for i in [0, n) on at most par goroutines.
func forEach(n, par int, f func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range par {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}
