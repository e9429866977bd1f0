package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// firstResult is n agents' first requests for one credential, all at once,
// against a freshly started credproxy.
type firstResult struct {
	Requests     int     `json:"requests"`
	OK           int     `json:"ok"`
	Errors       int     `json:"errors"`
	Seconds      float64 `json:"seconds"` // the concurrent burst only
	Acquisitions int     `json:"acquisitions"`
	FirstError   string  `json:"first_error,omitempty"`
}

// runFirst opens n MITM tunnels (CONNECT and TLS handshake, no request yet),
// then sends one request on each at the same moment, so the requests meet in
// the lease manager rather than being spread out by the handshakes. It then
// counts lease.created for the credential in credproxy's audit output.
func runFirst(p *credproxyProc, target, auth string, n int) (firstResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := make([]*tls.Conn, n)
	var mu sync.Mutex
	r := firstResult{Requests: n}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		r.Errors++
		if r.FirstError == "" {
			r.FirstError = err.Error()
		}
	}
	forEach(n, 32, func(i int) {
		c, err := mitmConn(ctx, p.proxyURL.Host, target, p.roots)
		if err != nil {
			fail(err)
			return
		}
		conns[i] = c
	})
	start := make(chan struct{})
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			defer c.Close()
			<-start
			status, err := roundTrip(c, target, "/v1/models", auth)
			switch {
			case err != nil:
				fail(err)
			case status != 200:
				fail(fmt.Errorf("status %d", status))
			default:
				ok.Add(1)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	r.Seconds = time.Since(t0).Seconds()
	r.OK = int(ok.Load())
	var err error
	r.Acquisitions, err = countCreated(p.audit, "bench")
	return r, err
}

// hostsResult is one request to each of n distinct MITM'd hosts.
type hostsResult struct {
	Hosts            int            `json:"hosts"`
	Handshakes       int            `json:"tls_handshakes_ok"`
	Statuses         map[string]int `json:"statuses"`
	Seconds          float64        `json:"seconds"`
	CertCacheEntries float64        `json:"cert_cache_entries"`
	FirstError       string         `json:"first_error,omitempty"`
}

// runHosts CONNECTs to each host, completes TLS against the leaf credproxy
// mints for it, and sends one request, which gets a 502 because nothing
// listens there: the leaf minting and caching are what is measured.
func runHosts(p *credproxyProc, hosts []string, auth string) hostsResult {
	r := hostsResult{Hosts: len(hosts), Statuses: map[string]int{}}
	var mu sync.Mutex
	t0 := time.Now()
	forEach(len(hosts), 16, func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := mitmConn(ctx, p.proxyURL.Host, hosts[i], p.roots)
		var status int
		if err == nil {
			status, err = roundTrip(c, hosts[i], "/v1/models", auth)
			c.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		if c != nil {
			r.Handshakes++
		}
		if err != nil {
			r.Statuses["error"]++
			if r.FirstError == "" {
				r.FirstError = err.Error()
			}
			return
		}
		r.Statuses[strconv.Itoa(status)]++
	})
	r.Seconds = time.Since(t0).Seconds()
	r.CertCacheEntries = p.metric("credproxy_cert_cache_entries")
	return r
}

// cpuUse is the CPU time credproxy and this process (the clients and the
// upstream) spent during a phase.
type cpuUse struct{ proxy, load time.Duration }

// measureCPU runs f and returns the CPU time spent meanwhile.
func measureCPU(p *credproxyProc, f func()) (cpuUse, error) {
	p0, err1 := proctest.CPU(p.child.PID())
	l0, err2 := proctest.CPU(os.Getpid())
	if err := errors.Join(err1, err2); err != nil {
		return cpuUse{}, err
	}
	f()
	p1, err1 := proctest.CPU(p.child.PID())
	l1, err2 := proctest.CPU(os.Getpid())
	return cpuUse{proxy: p1 - p0, load: l1 - l0}, errors.Join(err1, err2)
}

// perThousand is milliseconds of d per 1,000 of n.
func perThousand(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Milliseconds()) / (float64(n) / 1000)
}
