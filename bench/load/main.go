// Command load measures credproxy end to end on loopback: throughput,
// latency and CPU against a local HTTPS upstream, direct and through a
// credproxy process, plus SSE first-event time, memory after many MITM'd
// hosts and lease acquisitions under a burst of first requests. Every
// listener is on 127.0.0.1 and every loop is bounded. See docs/benchmarks.md.
//
//	go run ./bench/load [-duration 5s] [-workers 8] [-json FILE] [-cpuprofile FILE]
//	go run ./bench/load -compare   # direct, bare goproxy, credproxy h1 and h2, interleaved
package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

type options struct {
	duration   time.Duration
	latency    time.Duration
	workers    int
	sse        int
	hosts      int
	first      int
	jsonFile   string
	cpuProfile string
	memProfile string
	compare    bool
	rounds     int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each throughput phase (keep-alive, new connection), direct and proxied")
	flag.DurationVar(&o.latency, "latency", 2*time.Second, "length of each single-client latency phase")
	flag.IntVar(&o.workers, "workers", 8, "concurrent clients in the throughput phases")
	flag.IntVar(&o.sse, "sse", 50, "SSE streams per mode")
	flag.IntVar(&o.hosts, "hosts", 1000, "distinct MITM'd hosts before the RSS reading (at most 60000)")
	flag.IntVar(&o.first, "first", 1000, "concurrent first requests to one credential")
	flag.StringVar(&o.jsonFile, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "save a CPU profile of credproxy during the proxied keep-alive phase")
	flag.StringVar(&o.memProfile, "memprofile", "", "save credproxy's allocation profile after the proxied keep-alive phase")
	flag.BoolVar(&o.compare, "compare", false, "instead of direct-versus-proxied, compare direct, bench/bare (goproxy's floor) and credproxy with HTTP/1.1 and HTTP/2 on the agent side, interleaved, and evaluate the HTTP/2-and-performance targets; -cpuprofile FILE also profiles bench/bare into FILE.bare")
	flag.IntVar(&o.rounds, "rounds", 4, "-compare: each throughput phase is split into this many rounds, every arm taking a turn per round")
	flag.Parse()
	if o.hosts > 60000 || o.workers < 1 || o.rounds < 1 || o.rounds > 100 {
		fmt.Fprintln(os.Stderr, "load: -hosts must be <= 60000, -workers >= 1 and -rounds 1..100")
		os.Exit(2)
	}
	rep, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	rep.print(os.Stdout)
	if o.jsonFile != "" {
		if err := rep.writeJSON(o.jsonFile); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
	}
}

func run(o options) (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "credproxy-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	key := "sk-test-bench-" + randomHex(16)
	const placeholder = "Bearer placeholder"

	pki, err := newUpstreamPKI(dir)
	if err != nil {
		return nil, err
	}
	up, err := startUpstream(pki.leaf, key)
	if err != nil {
		return nil, err
	}
	defer up.close()
	step("building credproxy")
	bin, err := proctest.Build(ctx, dir)
	if err != nil {
		return nil, err
	}
	_, port, _ := splitPort(up.addr)
	hosts := make([]string, o.hosts)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.1.%d.%d:%s", i/250, i%250+1, port)
	}
	cfgFile, err := writeConfig(dir, up.addr, pki.caFile, hosts)
	if err != nil {
		return nil, err
	}
	rep := &report{Machine: readMachine(), Options: o.public()}

	// A fresh process for the burst of first requests: no lease is held yet.
	step(fmt.Sprintf("%d concurrent first requests (fresh credproxy)", o.first))
	p1, err := startCredproxy(bin, cfgFile, dir, "first", key, false)
	if err != nil {
		return nil, err
	}
	rep.First, err = runFirst(p1, up.addr, placeholder, o.first)
	rep.CredproxyErrorLogs += p1.stop()
	if err != nil {
		return nil, err
	}

	// A second fresh process for everything else, so RSS is not the burst's.
	p, err := startCredproxy(bin, cfgFile, dir, "main", key, o.cpuProfile != "" || o.memProfile != "")
	if err != nil {
		return nil, err
	}
	defer func() { rep.CredproxyErrorLogs += p.stop() }()
	rep.Memory.StartMiB, _, _ = p.memory()
	if o.compare {
		err = runCompare(ctx, o, rep, dir, p, up, pki, key, placeholder)
	} else {
		err = runLoad(o, rep, p, up, pki.pool, key, placeholder)
	}
	if err != nil {
		return nil, err
	}
	rep.Memory.AfterLoadMiB, _, _ = p.memory()

	step(fmt.Sprintf("%d distinct MITM'd hosts", o.hosts))
	rep.Hosts = runHosts(p, hosts, placeholder)
	rep.Memory.AfterHostsMiB, rep.Memory.PeakMiB, _ = p.memory()
	rep.UpstreamUnauthorized = up.unauthorized.Load()
	rep.evaluate()
	return rep, nil
}

// runLoad runs the direct-versus-proxied phases against one credproxy. Both
// clients ask for the same URL; the direct one trusts the upstream's CA and
// sends the real key, the proxied one trusts credproxy's CA and sends the
// placeholder.
func runLoad(o options, rep *report, p *credproxyProc, up *upstream, upRoots *x509.CertPool, key, placeholder string) error {
	base := "https://" + up.addr
	load := func(name string, proxied bool, workers int, keepAlive bool, dur time.Duration) httpLoad {
		if proxied {
			return httpLoad{name: name, client: newClient(p.proxyURL, p.roots, workers, keepAlive),
				url: base, auth: placeholder, workers: workers, dur: dur}
		}
		return httpLoad{name: name, client: newClient(nil, upRoots, workers, keepAlive),
			url: base, auth: "Bearer " + key, workers: workers, dur: dur}
	}
	step("warm-up (takes the lease, fills the upstream pool)")
	for _, proxied := range []bool{false, true} {
		w := load("warm-up", proxied, o.workers, true, 10*time.Second)
		w.max = 500
		if r := w.run(); r.Errors > 0 {
			return fmt.Errorf("warm-up (proxied %v): %d errors, first: %s", proxied, r.Errors, r.FirstError)
		}
	}

	step("single-client keep-alive latency")
	rep.Latency.Direct = load("latency direct", false, 1, true, o.latency).run()
	rep.Latency.Proxy = load("latency proxy", true, 1, true, o.latency).run()

	step(fmt.Sprintf("keep-alive, %d clients", o.workers))
	directCPU, err := measureCPU(p, func() {
		rep.KeepAlive.Direct = load("keep-alive direct", false, o.workers, true, o.duration).run()
	})
	if err != nil {
		return err
	}
	profErr := make(chan error, 1)
	if o.cpuProfile != "" {
		go func() { profErr <- p.profile(o.cpuProfile, max(1, int(o.duration.Seconds())-1)) }()
	} else {
		profErr <- nil
	}
	cpu, err := measureCPU(p, func() {
		rep.KeepAlive.Proxy = load("keep-alive proxy", true, o.workers, true, o.duration).run()
	})
	if err != nil {
		return err
	}
	if err := <-profErr; err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if o.memProfile != "" {
		if err := p.saveProfile(o.memProfile, "allocs"); err != nil {
			return fmt.Errorf("allocation profile: %w", err)
		}
	}
	n := rep.KeepAlive.Proxy.Requests
	rep.ProxyCPU.Seconds = cpu.proxy.Seconds()
	rep.ProxyCPU.MsPer1000 = perThousand(cpu.proxy, n)
	rep.ProxyCPU.Cores = cpu.proxy.Seconds() / rep.KeepAlive.Proxy.Seconds
	rep.LoadCPU.DirectMsPer1000 = perThousand(directCPU.load, rep.KeepAlive.Direct.Requests)
	rep.LoadCPU.ProxiedMsPer1000 = perThousand(cpu.load, n)

	step(fmt.Sprintf("new connection per request, %d clients", o.workers))
	rep.NewConn.Direct = load("new-conn direct", false, o.workers, false, o.duration).run()
	rep.NewConn.Proxy = load("new-conn proxy", true, o.workers, false, o.duration).run()

	step(fmt.Sprintf("%d SSE streams each way", o.sse))
	rep.SSE.Direct = runSSE("sse direct", newClient(nil, upRoots, 1, true), base, "Bearer "+key, o.sse)
	rep.SSE.Proxy = runSSE("sse proxy", newClient(p.proxyURL, p.roots, 1, true), base, placeholder, o.sse)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitPort(addr string) (host, port string, err error) {
	u, err := url.Parse("//" + addr)
	if err != nil {
		return "", "", err
	}
	return u.Hostname(), u.Port(), nil
}

func step(s string) { fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), s) }
