// Command compare measures credproxy against bare goproxy (bench/bare, the
// library's floor: MITM plus one injected header) and against a direct
// connection, on loopback:
//
//	go run ./bench/compare [-duration 4s] [-rounds 3] [-workers 8] [-sse 20]
//
// It builds credproxy (internal/proctest.Build) and bench/bare, starts an
// HTTPS upstream that checks the injected key, and runs interleaved rounds:
// in each round, each phase (keep-alive load, a new connection per request,
// SSE first-event time) runs once per arm (direct, bare goproxy, credproxy)
// before the next phase, so drift on a shared machine hits all arms alike.
// Each load slice lasts -duration. Proxy CPU comes from /proc/PID/stat for
// both proxies the same way. It prints a table and the targets evaluated in
// this run, and stops by itself: every loop is bounded by time or count, and
// a watchdog ends the run if it overruns.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

type options struct {
	duration time.Duration
	rounds   int
	workers  int
	sse      int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "length of each load slice (one arm, one phase, one round)")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds")
	flag.IntVar(&o.workers, "workers", 8, "concurrent clients")
	flag.IntVar(&o.sse, "sse", 20, "SSE streams per arm per round")
	flag.Parse()
	if o.duration <= 0 || o.duration > 2*time.Minute || o.rounds < 1 || o.rounds > 20 ||
		o.workers < 1 || o.workers > 256 || o.sse < 1 || o.sse > 1000 {
		fmt.Fprintln(os.Stderr, "compare: need 0 < -duration ≤ 2m, 1 ≤ -rounds ≤ 20, 1 ≤ -workers ≤ 256, 1 ≤ -sse ≤ 1000")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// arm is one way an agent reaches the upstream.
type arm struct {
	name   string
	pid    int          // the proxy process whose CPU and RSS are read; 0: direct
	ka     *http.Client // keep-alive
	nc     *http.Client // a new connection per request
	sse    *http.Client // one warm connection, sequential streams
	auth   string
	kaT    tally
	ncT    tally
	sseLat []time.Duration
	sseErr int
	rss    float64 // MiB, after the run
	peak   float64
}

// tally sums one arm's slices of a phase.
type tally struct {
	lat      []time.Duration
	errs     int
	elapsed  time.Duration
	cpu      time.Duration // the proxy's user+system CPU during the slices
	firstErr string
}

func (t *tally) rps() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(len(t.lat)+t.errs) / t.elapsed.Seconds()
}

// cpuPer1000 is the proxy's CPU in ms per 1,000 requests.
func (t *tally) cpuPer1000() float64 {
	n := len(t.lat) + t.errs
	if n == 0 {
		return 0
	}
	return float64(t.cpu.Microseconds()) / 1000 / (float64(n) / 1000)
}

func run(o options) error {
	// Watchdog: the whole run is bounded even if something hangs.
	limit := 3*time.Minute + time.Duration(o.rounds)*(6*o.duration+time.Duration(o.sse)*3*time.Second)
	var cleanup []func()
	var cleanMu sync.Mutex
	watchdog := time.AfterFunc(limit, func() {
		fmt.Fprintf(os.Stderr, "compare: run exceeded %s; stopping\n", limit)
		cleanMu.Lock()
		for _, f := range slices.Backward(cleanup) {
			f()
		}
		os.Exit(3)
	})
	defer watchdog.Stop()
	defer func() {
		cleanMu.Lock()
		defer cleanMu.Unlock()
		for _, f := range slices.Backward(cleanup) {
			f()
		}
		cleanup = nil
	}()
	onExit := func(f func()) { cleanMu.Lock(); cleanup = append(cleanup, f); cleanMu.Unlock() }

	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	dir, err := os.MkdirTemp("", "credproxy-compare-")
	if err != nil {
		return err
	}
	onExit(func() { _ = os.RemoveAll(dir) })
	key := "sk-test-compare-" + randomHex(16)
	const placeholder = "Bearer placeholder"

	pki, err := newUpstreamPKI(dir)
	if err != nil {
		return err
	}
	up, err := startUpstream(pki.leaf, key)
	if err != nil {
		return err
	}
	onExit(up.close)
	step("building and starting credproxy")
	cp, cpURL, cpRoots, err := startCredproxy(ctx, dir, up.addr, pki.caFile, key)
	if err != nil {
		return err
	}
	onExit(func() { _ = cp.Stop(15 * time.Second) })
	step("building and starting bench/bare (goproxy v1.9.3 MITM floor)")
	bare, bareURL, bareRoots, err := startBare(ctx, dir, pki.caFile, up.addr, key)
	if err != nil {
		return err
	}
	onExit(func() { _ = bare.Process.Kill(); _ = bare.Wait() })

	base := "https://" + up.addr
	mk := func(name string, pid int, proxyURL *url.URL, roots *x509.CertPool, auth string) *arm {
		return &arm{name: name, pid: pid, auth: auth,
			ka:  newClient(proxyURL, roots, o.workers, true),
			nc:  newClient(proxyURL, roots, o.workers, false),
			sse: newClient(proxyURL, roots, 1, true)}
	}
	arms := []*arm{
		mk("direct", 0, nil, pki.pool, "Bearer "+key),
		mk("bare goproxy", bare.Process.Pid, bareURL, bareRoots, placeholder),
		mk("credproxy", cp.PID(), cpURL, cpRoots, placeholder),
	}

	step("warm-up, 500 requests per arm")
	for _, a := range arms {
		var t tally
		loadSlice(a.ka, base, a.auth, o.workers, 10*time.Second, 500, &t)
		if t.errs > 0 {
			return fmt.Errorf("warm-up %s: %d errors, first: %s", a.name, t.errs, t.firstErr)
		}
	}
	for r := range o.rounds {
		step(fmt.Sprintf("round %d/%d: keep-alive, %d clients, %v per arm", r+1, o.rounds, o.workers, o.duration))
		for _, a := range arms {
			if err := measured(a, func() { loadSlice(a.ka, base, a.auth, o.workers, o.duration, 0, &a.kaT) }, &a.kaT); err != nil {
				return err
			}
		}
		step(fmt.Sprintf("round %d/%d: new connection per request, %d clients, %v per arm", r+1, o.rounds, o.workers, o.duration))
		for _, a := range arms {
			if err := measured(a, func() { loadSlice(a.nc, base, a.auth, o.workers, o.duration, 0, &a.ncT) }, &a.ncT); err != nil {
				return err
			}
		}
		step(fmt.Sprintf("round %d/%d: %d SSE streams per arm", r+1, o.rounds, o.sse))
		for _, a := range arms {
			for range o.sse {
				if d, err := sseOnce(a.sse, base, a.auth); err != nil {
					a.sseErr++
				} else {
					a.sseLat = append(a.sseLat, d)
				}
			}
		}
	}
	for _, a := range arms {
		if a.pid != 0 {
			rss, peak, err := proctest.Memory(a.pid)
			if err != nil {
				return err
			}
			a.rss, a.peak = mib(rss), mib(peak)
		}
		a.ka.CloseIdleConnections()
		a.nc.CloseIdleConnections()
		a.sse.CloseIdleConnections()
	}
	printReport(os.Stdout, o, arms, up.unauthorized.Load(), cp.ErrorLogs())
	return nil
}

// measured runs f and adds the arm's proxy CPU meanwhile to t.
func measured(a *arm, f func(), t *tally) error {
	if a.pid == 0 {
		f()
		return nil
	}
	c0, err := proctest.CPU(a.pid)
	if err != nil {
		return err
	}
	f()
	c1, err := proctest.CPU(a.pid)
	if err != nil {
		return err
	}
	t.cpu += c1 - c0
	return nil
}

// newClient is an HTTP/1.1 agent, optionally through a proxy.
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

// loadSlice is a closed loop: workers each POST the next request as soon as
// the last one's body is read, until dur has passed or max requests (0: no
// limit) are done. Results are added to t.
func loadSlice(c *http.Client, base, auth string, workers int, dur time.Duration, limit int, t *tally) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	issued := 0
	start := time.Now()
	deadline := start.Add(dur)
	for range workers {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			var fe string
			for time.Now().Before(deadline) {
				if limit > 0 {
					mu.Lock()
					issued++
					over := issued > limit
					mu.Unlock()
					if over {
						break
					}
				}
				t0 := time.Now()
				if err := post(c, base, auth); err != nil {
					errs++
					if fe == "" {
						fe = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			t.lat, t.errs = append(t.lat, lat...), t.errs+errs
			if t.firstErr == "" {
				t.firstErr = fe
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	t.elapsed += time.Since(start)
}

func post(c *http.Client, base, auth string) error {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(requestBody))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != int64(len(chatResponse)) {
		err = fmt.Errorf("%d body bytes, want %d", n, len(chatResponse))
	}
	return err
}

// sseOnce returns the time from sending a streaming request to reading its
// first complete event, and checks that the whole stream arrives.
func sseOnce(c *http.Client, base, auth string) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/stream", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "text/event-stream")
	t0 := time.Now()
	resp, err := c.Do(req)
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
	for events <= sseEvents+1 { // bounded: the client's timeout ends a stalled read
		line, err := br.ReadString('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if line == "\n" {
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

func pct(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func step(s string) { fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), s) }
