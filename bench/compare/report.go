package main

import (
	"fmt"
	"io"
	"runtime"
)

// printReport prints the table (Markdown) and the targets of this run.
func printReport(w io.Writer, o options, arms []*arm, unauthorized int64, cpErrors int) {
	direct, bare, cp := arms[0], arms[1], arms[2]
	fmt.Fprintf(w, "\n%d interleaved rounds, %v per slice, %d clients, %d SSE streams per arm per round; GOMAXPROCS %d\n\n",
		o.rounds, o.duration, o.workers, o.sse, runtime.GOMAXPROCS(0))
	fmt.Fprintln(w, "| arm | phase | requests | errors | rps | vs direct | p50 ms | p99 ms | proxy CPU ms / 1,000 | RSS MiB (peak) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, ph := range []struct {
		name string
		t    func(*arm) *tally
	}{{"keep-alive", func(a *arm) *tally { return &a.kaT }}, {"new conn", func(a *arm) *tally { return &a.ncT }}} {
		d := ph.t(direct).rps()
		for _, a := range arms {
			t := ph.t(a)
			cpu, rss := "–", "–"
			if a.pid != 0 {
				cpu = fmt.Sprintf("%.1f", t.cpuPer1000())
				rss = fmt.Sprintf("%.1f (%.1f)", a.rss, a.peak)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %.2fx | %.2f | %.2f | %s | %s |\n", a.name, ph.name,
				len(t.lat)+t.errs, t.errs, t.rps(), ratio(t.rps(), d), pct(t.lat, 0.5), pct(t.lat, 0.99), cpu, rss)
		}
	}
	for _, a := range arms {
		fmt.Fprintf(w, "| %s | SSE first event | %d | %d | – | – | %.2f | %.2f | – | – |\n", a.name,
			len(a.sseLat)+a.sseErr, a.sseErr, pct(a.sseLat, 0.5), pct(a.sseLat, 0.99))
	}
	for _, a := range arms {
		if a.kaT.firstErr != "" || a.ncT.firstErr != "" {
			fmt.Fprintf(w, "\n%s first errors: keep-alive %q, new conn %q", a.name, a.kaT.firstErr, a.ncT.firstErr)
		}
	}
	fmt.Fprintf(w, "\nupstream 401s: %d; credproxy ERROR log records: %d\n\n", unauthorized, cpErrors)

	d := direct.kaT.rps()
	bareRatio, cpRatio := ratio(bare.kaT.rps(), d), ratio(cp.kaT.rps(), d)
	ncRatio := ratio(cp.ncT.rps(), direct.ncT.rps())
	sseD, sseC := pct(direct.sseLat, 0.5), pct(cp.sseLat, 0.5)
	fmt.Fprintln(w, "| target | want | got | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|")
	target(w, "credproxy keep-alive ≥ 1.3× bare goproxy's ratio",
		fmt.Sprintf("≥ %.3f (bare %.3f)", 1.3*bareRatio, bareRatio), fmt.Sprintf("%.3f (%.2f× bare's)", cpRatio, ratio(cpRatio, bareRatio)),
		cpRatio >= 1.3*bareRatio)
	target(w, "credproxy keep-alive vs direct", "≥ 0.40", fmt.Sprintf("%.3f", cpRatio), cpRatio >= 0.40)
	bc, cc := bare.kaT.cpuPer1000(), cp.kaT.cpuPer1000()
	target(w, "credproxy CPU per 1,000 ≤ 0.7× bare's (keep-alive)",
		fmt.Sprintf("≤ %.1f ms (bare %.1f)", 0.7*bc, bc), fmt.Sprintf("%.1f ms (%.2f× bare's)", cc, ratio(cc, bc)), cc <= 0.7*bc && bc > 0)
	target(w, "credproxy new-connection ratio", "≥ 0.60", fmt.Sprintf("%.3f", ncRatio), ncRatio >= 0.6)
	target(w, "credproxy SSE first event within 2 ms of direct (p50)",
		fmt.Sprintf("≤ %.2f ms (direct %.2f)", sseD+2, sseD), fmt.Sprintf("%.2f ms (%+.2f)", sseC, sseC-sseD),
		sseC <= sseD+2 && len(cp.sseLat) > 0 && cp.sseErr == 0)
}

func target(w io.Writer, name, want, got string, met bool) {
	v := "MISSED"
	if met {
		v = "MET"
	}
	fmt.Fprintf(w, "| %s | %s | %s | **%s** |\n", name, want, got, v)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
