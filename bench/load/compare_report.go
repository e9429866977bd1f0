package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// compareReport is what -compare measured: one row per arm.
type compareReport struct {
	Rounds    int          `json:"rounds"`
	H2Offered bool         `json:"h2_offered"`
	H2Note    string       `json:"h2_note,omitempty"`
	Arms      []armResult  `json:"arms"`
	Profiles  []profileRun `json:"cpu_profiles,omitempty"`
}

// profileRun is one -cpuprofile load: the profile covers its first Seconds.
type profileRun struct {
	File     string  `json:"file"`
	Arm      string  `json:"arm"`
	Seconds  int     `json:"profile_seconds"`
	RPS      float64 `json:"rps"`
	ProxyCPU float64 `json:"proxy_cpu_ms_per_1000"`
}

type armResult struct {
	Name      string  `json:"name"`
	KeepAlive result  `json:"keep_alive"`
	KARatio   float64 `json:"keep_alive_vs_direct"`
	// ProxyCPU is the proxy process's utime+stime per 1,000 keep-alive
	// requests; LoadCPU the bench process's (clients and upstream).
	ProxyCPU     float64 `json:"proxy_cpu_ms_per_1000"`
	LoadCPU      float64 `json:"load_cpu_ms_per_1000"`
	NewConn      *result `json:"new_connection,omitempty"`
	NCRatio      float64 `json:"new_connection_vs_direct"`
	NewConnCPU   float64 `json:"new_connection_proxy_cpu_ms_per_1000"`
	SSEFirstP50  float64 `json:"sse_first_event_p50_ms"`
	SSEFirstP90  float64 `json:"sse_first_event_p90_ms"`
	SSEErrors    int     `json:"sse_errors"`
	RSSMiB       float64 `json:"rss_mib"`
	proxyProcess bool
}

func (c *compareReport) add(a *arm, rss float64) {
	r := armResult{Name: a.name, KeepAlive: a.ka.result(a.name), RSSMiB: rss, SSEErrors: a.sseErr, proxyProcess: a.pid != 0}
	r.ProxyCPU = perThousand(a.ka.cpu.proxy, r.KeepAlive.Requests)
	r.LoadCPU = perThousand(a.ka.cpu.load, r.KeepAlive.Requests)
	if a.fresh != nil {
		nc := a.nc.result(a.name)
		r.NewConn = &nc
		r.NewConnCPU = perThousand(a.nc.cpu.proxy, nc.Requests)
	}
	sse := slices.Clone(a.sse)
	slices.Sort(sse)
	r.SSEFirstP50, r.SSEFirstP90 = pct(sse, 0.5), pct(sse, 0.9)
	if len(c.Arms) > 0 { // the first arm is direct
		d := c.Arms[0]
		r.KARatio = ratio(r.KeepAlive.RPS, d.KeepAlive.RPS)
		if r.NewConn != nil && d.NewConn != nil {
			r.NCRatio = ratio(r.NewConn.RPS, d.NewConn.RPS)
		}
	} else {
		r.KARatio, r.NCRatio = 1, 1
	}
	c.Arms = append(c.Arms, r)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (c *compareReport) arm(name string) *armResult {
	for i := range c.Arms {
		if c.Arms[i].Name == name {
			return &c.Arms[i]
		}
	}
	return nil
}

// targets are the HTTP/2-and-performance issue's, evaluated on this run.
func (c *compareReport) targets() []target {
	d, b, h1 := c.arm("direct"), c.arm("bare goproxy"), c.arm("credproxy h1")
	if d == nil || b == nil || h1 == nil {
		return nil
	}
	ts := []target{
		{Name: fmt.Sprintf("credproxy keep-alive vs direct >= 1.3x bare goproxy's (%.3fx)", b.KARatio),
			Want: fmt.Sprintf(">= %.3f", 1.3*b.KARatio), Got: h1.KARatio, Unit: "x", Met: h1.KARatio >= 1.3*b.KARatio},
		{Name: "credproxy keep-alive vs direct", Want: ">= 0.4", Got: h1.KARatio, Unit: "x", Met: h1.KARatio >= 0.40},
		{Name: fmt.Sprintf("credproxy CPU per 1,000 <= 0.7x bare goproxy's (%.1f ms)", b.ProxyCPU),
			Want: fmt.Sprintf("<= %.1f", 0.7*b.ProxyCPU), Got: h1.ProxyCPU, Unit: "ms", Met: h1.ProxyCPU <= 0.7*b.ProxyCPU},
		{Name: "credproxy new-connection rate vs direct", Want: ">= 0.6", Got: h1.NCRatio, Unit: "x", Met: h1.NCRatio >= 0.6},
		{Name: fmt.Sprintf("credproxy SSE first event p50 within 2 ms of direct (%.3f ms)", d.SSEFirstP50),
			Want: fmt.Sprintf("<= %.3f", d.SSEFirstP50+2), Got: h1.SSEFirstP50, Unit: "ms",
			Met: h1.SSEFirstP50 <= d.SSEFirstP50+2 && h1.SSEErrors == 0},
	}
	h2 := target{Name: "credproxy agent-side h2 throughput >= h1's", Want: fmt.Sprintf(">= %.0f", h1.KeepAlive.RPS), Unit: "rps"}
	if x := c.arm("credproxy h2"); x != nil {
		h2.Got, h2.Met = x.KeepAlive.RPS, x.KeepAlive.RPS >= h1.KeepAlive.RPS && x.KeepAlive.Errors == 0
	} else {
		h2.Name += ": h2 not offered"
	}
	return append(ts, h2)
}

func (c *compareReport) print(w io.Writer, workers any) {
	fmt.Fprintf(w, "comparison, interleaved (%d rounds per phase), %v clients:\n", c.Rounds, workers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "arm\tkeep-alive rps\tvs direct\tp50 ms\tp99 ms\terrors\tproxy CPU ms/1k\tload CPU ms/1k\tnew-conn rps\tvs direct\terrors\tSSE 1st p50 ms\tRSS MiB\t")
	for _, r := range c.Arms {
		cpu, rss, nc, ncr := "-", "-", "-", "-"
		if r.proxyProcess {
			cpu, rss = fmt.Sprintf("%.1f", r.ProxyCPU), fmt.Sprintf("%.1f", r.RSSMiB)
		}
		if r.NewConn != nil {
			nc, ncr = fmt.Sprintf("%.0f", r.NewConn.RPS), fmt.Sprintf("%.2fx", r.NCRatio)
		}
		sse := fmt.Sprintf("%.3f", r.SSEFirstP50)
		if r.SSEErrors > 0 {
			sse += fmt.Sprintf(" (%d errors)", r.SSEErrors)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2fx\t%.3f\t%.3f\t%d\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, r.KeepAlive.RPS,
			r.KARatio, r.KeepAlive.P50ms, r.KeepAlive.P99ms, r.KeepAlive.Errors, cpu, r.LoadCPU, nc, ncr,
			errorsOf(r.NewConn), sse, rss)
	}
	tw.Flush()
	if c.H2Note != "" {
		fmt.Fprintln(w, c.H2Note)
	}
	for _, r := range c.Arms {
		for i, e := range []string{r.KeepAlive.FirstError, firstErrorOf(r.NewConn)} {
			if e != "" {
				fmt.Fprintf(w, "  %s, %s, first error: %s\n", r.Name, []string{"keep-alive", "new connection"}[i], e)
			}
		}
	}
	for _, f := range c.Profiles {
		fmt.Fprintf(w, "CPU profile of %s (%ds): %s; under that load %.0f rps, %.1f ms proxy CPU per 1,000\n",
			f.Arm, f.Seconds, f.File, f.RPS, f.ProxyCPU)
	}
}

func errorsOf(r *result) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprint(r.Errors)
}

func firstErrorOf(r *result) string {
	if r == nil {
		return ""
	}
	return r.FirstError
}
