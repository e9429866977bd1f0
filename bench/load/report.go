package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

type pair struct {
	Direct result `json:"direct"`
	Proxy  result `json:"proxy"`
}

func (p pair) ratio() float64 {
	if p.Direct.RPS == 0 {
		return 0
	}
	return p.Proxy.RPS / p.Direct.RPS
}

type machine struct {
	NumCPU    int    `json:"nproc"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go"`
}

type target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Unit string  `json:"unit"`
	Met  bool    `json:"met"`
}

// report is everything one run measured; it prints as a table and as JSON.
type report struct {
	Machine   machine        `json:"machine"`
	Options   map[string]any `json:"options"`
	Latency   pair           `json:"latency_single_client"`
	KeepAlive pair           `json:"keep_alive"`
	NewConn   pair           `json:"new_connection"`
	SSE       struct {
		Direct sseResult `json:"direct"`
		Proxy  sseResult `json:"proxy"`
	} `json:"sse"`
	ProxyCPU struct {
		Seconds   float64 `json:"seconds"`
		MsPer1000 float64 `json:"ms_per_1000_requests"`
		Cores     float64 `json:"cores_busy"`
	} `json:"proxy_cpu_keep_alive"`
	// LoadCPU is this process's CPU (clients and upstream) in the keep-alive
	// phases: with credproxy in the path they do more work too.
	LoadCPU struct {
		DirectMsPer1000  float64 `json:"direct_ms_per_1000_requests"`
		ProxiedMsPer1000 float64 `json:"proxied_ms_per_1000_requests"`
	} `json:"client_and_upstream_cpu_keep_alive"`
	AddedP50ms float64 `json:"added_p50_ms"`
	Memory     struct {
		StartMiB      float64 `json:"start_mib"`
		AfterLoadMiB  float64 `json:"after_load_mib"`
		AfterHostsMiB float64 `json:"after_hosts_mib"`
		PeakMiB       float64 `json:"peak_mib"`
	} `json:"rss"`
	Hosts                hostsResult `json:"distinct_hosts"`
	First                firstResult `json:"first_requests"`
	UpstreamUnauthorized int64       `json:"upstream_401s"`
	CredproxyErrorLogs   int         `json:"credproxy_error_logs"`
	Targets              []target    `json:"targets"`
	// Compare is set in -compare mode, which replaces the pairs above.
	Compare *compareReport `json:"compare,omitempty"`
}

func (o options) public() map[string]any {
	return map[string]any{"duration": o.duration.String(), "latency": o.latency.String(), "workers": o.workers,
		"sse_streams": o.sse, "hosts": o.hosts, "first_requests": o.first, "compare": o.compare, "rounds": o.rounds}
}

func (r *report) evaluate() {
	r.AddedP50ms = r.Latency.Proxy.P50ms - r.Latency.Direct.P50ms
	atMost := func(name string, got, limit float64, unit string) target {
		return target{Name: name, Want: fmt.Sprintf("<= %g", limit), Got: got, Unit: unit, Met: got <= limit}
	}
	atLeast := func(name string, got, limit float64, unit string) target {
		return target{Name: name, Want: fmt.Sprintf(">= %g", limit), Got: got, Unit: unit, Met: got >= limit}
	}
	rss := atMost(fmt.Sprintf("RSS after %d distinct MITM'd hosts", r.Hosts.Hosts), r.Memory.AfterHostsMiB, 40, "MiB")
	first := target{Name: fmt.Sprintf("%d concurrent first requests: source acquisitions", r.First.Requests), Want: "== 1",
		Got: float64(r.First.Acquisitions), Met: r.First.Acquisitions == 1 && r.First.OK == r.First.Requests}
	if r.Compare != nil {
		r.Targets = append(r.Compare.targets(), rss, first)
		return
	}
	r.Targets = []target{
		atLeast("keep-alive throughput vs direct", r.KeepAlive.ratio(), 0.45, "x"),
		atMost("proxy CPU per 1,000 keep-alive requests", r.ProxyCPU.MsPer1000, 80, "ms"),
		atMost("added p50 (single client, keep-alive)", r.AddedP50ms, 0.7, "ms"),
		atMost("SSE first event through credproxy (p50)", r.SSE.Proxy.FirstP50, 5, "ms"),
		atLeast("new-connection rate vs direct", r.NewConn.ratio(), 0.5, "x"),
		rss, first,
	}
}

func (r *report) print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\nmachine: nproc %d, %s, kernel %s, %s\n\n", m.NumCPU, m.CPU, m.Kernel, m.GoVersion)
	if r.Compare != nil {
		r.Compare.print(w, r.Options["workers"])
	} else {
		r.printLoad(w)
	}
	fmt.Fprintf(w, "RSS: %.1f MiB at start, %.1f after load, %.1f after %d distinct hosts (peak %.1f); %d TLS handshakes ok, statuses %v, cert cache %g entries, %.1fs\n",
		r.Memory.StartMiB, r.Memory.AfterLoadMiB, r.Memory.AfterHostsMiB, r.Hosts.Hosts, r.Memory.PeakMiB,
		r.Hosts.Handshakes, r.Hosts.Statuses, r.Hosts.CertCacheEntries, r.Hosts.Seconds)
	fmt.Fprintf(w, "first requests: %d sent at once, %d ok, %d lease.created in the audit trail (burst %.2fs)\n",
		r.First.Requests, r.First.OK, r.First.Acquisitions, r.First.Seconds)
	fmt.Fprintf(w, "upstream 401s: %d; credproxy ERROR log records: %d\n", r.UpstreamUnauthorized, r.CredproxyErrorLogs)
	for _, x := range []string{r.KeepAlive.Proxy.FirstError, r.NewConn.Proxy.FirstError, r.Hosts.FirstError, r.First.FirstError} {
		if x != "" {
			fmt.Fprintln(w, "  first error:", x)
		}
	}
	fmt.Fprintln(w, "\ntargets:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		met := "MET"
		if !t.Met {
			met = "MISSED"
		}
		got := fmt.Sprintf("%.3g", t.Got)
		if t.Got >= 1000 {
			got = fmt.Sprintf("%.0f", t.Got)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s %s\twant %s\t\n", met, t.Name, got, t.Unit, t.Want)
	}
	tw.Flush()
}

// printLoad prints the direct-versus-proxied table of the default mode.
func (r *report) printLoad(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tmode\trequests\trps\tp50 ms\tp90 ms\tp99 ms\terrors\tvs direct\t")
	for _, p := range []struct {
		name string
		pair
	}{{"latency (1 client)", r.Latency}, {fmt.Sprintf("keep-alive (%v)", r.Options["workers"]), r.KeepAlive},
		{fmt.Sprintf("new conn (%v)", r.Options["workers"]), r.NewConn}} {
		for _, x := range []result{p.Direct, p.Proxy} {
			mode := strings.Fields(x.Name)[len(strings.Fields(x.Name))-1]
			ratio := ""
			if mode == "proxy" {
				ratio = fmt.Sprintf("%.2fx", p.ratio())
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%s\t\n",
				p.name, mode, x.Requests, x.RPS, x.P50ms, x.P90ms, x.P99ms, x.Errors, ratio)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nproxy CPU, keep-alive: %.1f ms per 1,000 requests (%.2f cores busy)\n", r.ProxyCPU.MsPer1000, r.ProxyCPU.Cores)
	fmt.Fprintf(w, "client+upstream CPU, keep-alive: %.1f ms per 1,000 direct, %.1f proxied\n",
		r.LoadCPU.DirectMsPer1000, r.LoadCPU.ProxiedMsPer1000)
	fmt.Fprintf(w, "added p50, single client: %.3f ms; under %v-client load: %.3f ms\n", r.AddedP50ms,
		r.Options["workers"], r.KeepAlive.Proxy.P50ms-r.KeepAlive.Direct.P50ms)
	fmt.Fprintf(w, "SSE first event p50/p90: direct %.3f/%.3f ms, proxy %.3f/%.3f ms (%d+%d errors)\n",
		r.SSE.Direct.FirstP50, r.SSE.Direct.FirstP90, r.SSE.Proxy.FirstP50, r.SSE.Proxy.FirstP90, r.SSE.Direct.Errors, r.SSE.Proxy.Errors)
}

func (r *report) writeJSON(file string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(data, '\n'), 0o644)
}

func readMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), CPU: "unknown", Kernel: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}
