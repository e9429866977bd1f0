package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// arm is one way an agent reaches the upstream in -compare mode: direct,
// through bench/bare (goproxy's floor) or through credproxy with HTTP/1.1
// or HTTP/2 on the agent side. Every phase runs the arms interleaved, one
// slice each per round, so drift on the shared machine hits all alike.
type arm struct {
	name   string
	pid    int          // the proxy process whose CPU is counted; 0: direct
	client *http.Client // keep-alive
	fresh  *http.Client // a new connection per request; nil: not measured
	auth   string
	ka, nc tally
	sse    []time.Duration
	sseErr int
}

// tally sums one arm's rounds of a phase.
type tally struct {
	lat      []time.Duration
	errs     int
	elapsed  time.Duration
	firstErr string
	cpu      cpuUse
}

func (t *tally) result(name string) result {
	return summarize(name, append([]time.Duration(nil), t.lat...), t.errs, t.elapsed, t.firstErr)
}

// newH2Client is an agent that offers h2 in its TLS handshake (through the
// CONNECT tunnel) and sends every request as a stream on one connection.
func newH2Client(proxyURL *url.URL, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		Proxy:               http.ProxyURL(proxyURL),
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2:   true,
		MaxConnsPerHost:     1,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// protoMajor sends one request and returns the HTTP major version the
// agent side negotiated.
func protoMajor(c *http.Client, base, auth string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/models", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.ProtoMajor, nil
}

// runCompare measures the arms against each other in one run.
func runCompare(ctx context.Context, o options, rep *report, dir string, p *credproxyProc, up *upstream,
	pki *upstreamPKI, key, placeholder string) error {
	step("building and starting bench/bare (goproxy MITM floor)")
	bare, err := startBare(ctx, dir, pki.caFile, up.addr, key)
	if err != nil {
		return err
	}
	defer bare.stop()
	base := "https://" + up.addr
	c := &compareReport{Rounds: o.rounds}
	rep.Compare = c
	arms := []*arm{
		{name: "direct", client: newClient(nil, pki.pool, o.workers, true),
			fresh: newClient(nil, pki.pool, o.workers, false), auth: "Bearer " + key},
		{name: "bare goproxy", pid: bare.pid(), client: newClient(bare.proxyURL, bare.roots, o.workers, true),
			fresh: newClient(bare.proxyURL, bare.roots, o.workers, false), auth: placeholder},
		{name: "credproxy h1", pid: p.child.PID(), client: newClient(p.proxyURL, p.roots, o.workers, true),
			fresh: newClient(p.proxyURL, p.roots, o.workers, false), auth: placeholder},
	}
	h2 := newH2Client(p.proxyURL, p.roots)
	switch major, err := protoMajor(h2, base, placeholder); {
	case err != nil:
		return fmt.Errorf("credproxy h2 probe: %w", err)
	case major == 2:
		c.H2Offered = true
		arms = append(arms, &arm{name: "credproxy h2", pid: p.child.PID(), client: h2, auth: placeholder})
	default:
		c.H2Note = fmt.Sprintf("h2 not offered: credproxy's intercepted side answered HTTP/%d.x to a client offering h2", major)
		step(c.H2Note)
	}

	step("warm-up, 500 requests per arm")
	for _, a := range arms {
		w := httpLoad{name: a.name, client: a.client, url: base, auth: a.auth, workers: o.workers,
			dur: 10 * time.Second, max: 500, keep: true}
		if r := w.run(); r.Errors > 0 {
			return fmt.Errorf("warm-up %s: %d errors, first: %s", a.name, r.Errors, r.FirstError)
		}
	}
	slice := o.duration / time.Duration(o.rounds)
	phase := func(label string, t func(*arm) *tally, client func(*arm) *http.Client) error {
		step(fmt.Sprintf("%s, %d clients, %d rounds of %v per arm, interleaved", label, o.workers, o.rounds, slice))
		for range o.rounds {
			for _, a := range arms {
				if client(a) == nil {
					continue
				}
				l := httpLoad{name: a.name, client: client(a), url: base, auth: a.auth, workers: o.workers, dur: slice, keep: true}
				var lat []time.Duration
				var errs int
				var elapsed time.Duration
				var fe string
				use, err := measurePIDs(a.pid, func() { lat, errs, elapsed, fe = l.collect() })
				if err != nil {
					return err
				}
				x := t(a)
				x.lat, x.errs, x.elapsed = append(x.lat, lat...), x.errs+errs, x.elapsed+elapsed
				x.cpu.proxy, x.cpu.load = x.cpu.proxy+use.proxy, x.cpu.load+use.load
				if x.firstErr == "" {
					x.firstErr = fe
				}
			}
		}
		return nil
	}
	if err := phase("keep-alive", func(a *arm) *tally { return &a.ka }, func(a *arm) *http.Client { return a.client }); err != nil {
		return err
	}
	if err := phase("new connection per request", func(a *arm) *tally { return &a.nc }, func(a *arm) *http.Client { return a.fresh }); err != nil {
		return err
	}
	step(fmt.Sprintf("%d SSE streams per arm, interleaved", o.sse))
	for range o.sse {
		for _, a := range arms {
			if d, err := sseOnce(a.client, base, a.auth); err != nil {
				a.sseErr++
			} else {
				a.sse = append(a.sse, d)
			}
		}
	}
	bareRSS, _, _ := proctest.Memory(bare.pid())
	cpRSS, _, _ := proctest.Memory(p.child.PID())
	for _, a := range arms {
		c.add(a, map[int]float64{bare.pid(): mib(bareRSS), p.child.PID(): mib(cpRSS)}[a.pid])
		a.client.CloseIdleConnections()
		if a.fresh != nil {
			a.fresh.CloseIdleConnections()
		}
	}
	if o.cpuProfile != "" {
		var h2Arm *arm
		if len(arms) > 3 {
			h2Arm = arms[3]
		}
		if err := compareProfiles(o, c, p, bare, arms[1], arms[2], h2Arm, base); err != nil {
			return err
		}
	}
	if o.memProfile != "" { // credproxy's allocations since it started
		return p.saveProfile(o.memProfile, "allocs")
	}
	return nil
}

// compareProfiles profiles credproxy (agent side HTTP/1.1, then HTTP/2 when
// h2Arm is not nil, into FILE.h2) and bench/bare (FILE.bare) each under the
// same keep-alive load, one after the other.
func compareProfiles(o options, c *compareReport, p *credproxyProc, bare *bareProc, bareArm, cpArm, h2Arm *arm, base string) error {
	secs := max(1, int(o.duration.Seconds())-1)
	type profiled struct {
		a    *arm
		file string
		prof func(string, int) error
	}
	runs := []profiled{{cpArm, o.cpuProfile, p.profile}, {bareArm, o.cpuProfile + ".bare", bare.profile}}
	if h2Arm != nil {
		runs = append(runs, profiled{h2Arm, o.cpuProfile + ".h2", p.profile})
	}
	for _, x := range runs {
		step(fmt.Sprintf("CPU profile of %s under keep-alive load, %ds", x.a.name, secs))
		done := make(chan error, 1)
		go func() { done <- x.prof(x.file, secs) }()
		l := httpLoad{name: x.a.name, client: x.a.client, url: base, auth: x.a.auth, workers: o.workers, dur: o.duration}
		var r result
		use, err := measurePIDs(x.a.pid, func() { r = l.run() })
		if err != nil {
			return err
		}
		if r.Errors > 0 {
			return fmt.Errorf("profiled load %s: %d errors, first: %s", x.a.name, r.Errors, r.FirstError)
		}
		if err := <-done; err != nil {
			return fmt.Errorf("profile %s: %w", x.a.name, err)
		}
		c.Profiles = append(c.Profiles, profileRun{File: x.file, Arm: x.a.name, Seconds: secs, RPS: r.RPS,
			ProxyCPU: perThousand(use.proxy, r.Requests)})
	}
	return nil
}

// measurePIDs is measureCPU for any proxy process (pid 0: none).
func measurePIDs(pid int, f func()) (cpuUse, error) {
	var p0, p1 time.Duration
	var err error
	if pid != 0 {
		if p0, err = proctest.CPU(pid); err != nil {
			return cpuUse{}, err
		}
	}
	l0, err := proctest.CPU(os.Getpid())
	if err != nil {
		return cpuUse{}, err
	}
	f()
	if pid != 0 {
		if p1, err = proctest.CPU(pid); err != nil {
			return cpuUse{}, err
		}
	}
	l1, err := proctest.CPU(os.Getpid())
	return cpuUse{proxy: p1 - p0, load: l1 - l0}, err
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
