package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
)

// report is everything one soak measured; OK is what the exit status says.
type report struct {
	Machine            machine        `json:"machine"`
	DurationSeconds    float64        `json:"duration_seconds"`
	Tolerance          int            `json:"tolerance"`
	LegacyAdmin        bool           `json:"legacy_admin"` // the code rejected admin: {listen, tokenFile}
	Baseline           sample         `json:"baseline"`
	Peak               sample         `json:"peak"`
	After              sample         `json:"after_settle"`
	SettleSeconds      float64        `json:"settle_seconds"`
	Settled            bool           `json:"settled"`
	TopStacks          []string       `json:"top_stacks,omitempty"` // when not settled
	Kinds              []kindResult   `json:"kinds"`
	UpstreamHanging    int64          `json:"upstream_hanging_after_settle"`
	Upstream401        int64          `json:"upstream_401"`
	CredproxyErrorLogs int            `json:"credproxy_error_logs"`
	SecretHits         map[string]int `json:"secret_hits"`
	SecretTotal        int            `json:"secret_total"`
	OK                 bool           `json:"ok"`
}

type machine struct {
	NumCPU    int    `json:"num_cpu"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go_version"`
}

func readMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), CPU: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "credproxy soak: %.0f s, %d workers, %d cores (%s), %s\n\n",
		r.DurationSeconds, workers(), r.Machine.NumCPU, r.Machine.CPU, r.Machine.GoVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tbaseline\tpeak\tafter settle\t")
	fmt.Fprintf(tw, "goroutines\t%d\t%d\t%d\t\n", r.Baseline.Goroutines, r.Peak.Goroutines, r.After.Goroutines)
	fmt.Fprintf(tw, "open fds\t%d\t%d\t%d\t\n", r.Baseline.FDs, r.Peak.FDs, r.After.FDs)
	fmt.Fprintf(tw, "RSS MiB\t%.1f\t%.1f\t%.1f\t\n", r.Baseline.RSSMiB, r.Peak.RSSMiB, r.After.RSSMiB)
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\trequests\terrors\toutcomes\t")
	total, errs := 0, 0
	for _, k := range r.Kinds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", k.Kind, k.Requests, k.Errors, outcomes(k.Outcomes))
		total, errs = total+k.Requests, errs+k.Errors
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t\t\n", total, errs)
	_ = tw.Flush()
	for _, k := range r.Kinds {
		if k.FirstError != "" {
			fmt.Fprintf(w, "first error, %s: %s\n", k.Kind, k.FirstError)
		}
	}

	fmt.Fprintln(w)
	verdict := "yes"
	if !r.Settled {
		verdict = "NO"
	}
	fmt.Fprintf(w, "returned to baseline (+%d) within %.1f s: %s (goroutines %d -> %d, fds %d -> %d)\n",
		r.Tolerance, r.SettleSeconds, verdict, r.Baseline.Goroutines, r.After.Goroutines, r.Baseline.FDs, r.After.FDs)
	for _, s := range r.TopStacks {
		fmt.Fprintf(w, "  goroutines: %s\n", s)
	}
	fmt.Fprintf(w, "upstream /v1/hang requests still open after settle: %d; upstream 401s: %d; credproxy ERROR log records: %d\n",
		r.UpstreamHanging, r.Upstream401, r.CredproxyErrorLogs)
	var where []string
	for _, k := range slices.Sorted(maps.Keys(r.SecretHits)) {
		where = append(where, fmt.Sprintf("%s %d", k, r.SecretHits[k]))
	}
	fmt.Fprintf(w, "credential (raw, base64) found: %d (%s)\n", r.SecretTotal, strings.Join(where, ", "))
	if r.LegacyAdmin {
		fmt.Fprintln(w, "note: this credproxy rejected admin: {listen, tokenFile}; ran with admin: 127.0.0.1:0")
	}
	result := "PASS"
	if !r.OK {
		result = "FAIL"
	}
	fmt.Fprintln(w, result)
}

// outcomes formats {"200": 5, "closed": 1} as "200:5 closed:1".
func outcomes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func (r *report) writeJSON(file string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}
