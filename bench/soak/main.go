// Command soak runs credproxy under a bounded mix of good, abandoned and
// hostile traffic on loopback, then checks that its goroutines and open fds
// come back to the pre-soak baseline and that the credential appears in
// nothing credproxy wrote or answered. Every loop is bounded in count and
// time. See docs/soak.md.
//
//	go run ./bench/soak [-duration 60s] [-json FILE]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// maxDuration is the hard cap on -duration.
const maxDuration = 5 * time.Minute

type options struct {
	duration  time.Duration
	settle    time.Duration // how long to wait for goroutines and fds to return
	tolerance int           // goroutines and fds may end this far above baseline
	jsonFile  string
	// goroutineFile receives credproxy's goroutine dump if it did not settle.
	goroutineFile string
}

func main() {
	o := options{settle: 30 * time.Second}
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "length of the soak (at most 5m)")
	flag.IntVar(&o.tolerance, "tolerance", 10, "goroutines and fds may settle this far above the baseline")
	flag.StringVar(&o.jsonFile, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&o.goroutineFile, "goroutines", "", "if credproxy does not settle, save its goroutine dump (debug=1) here")
	flag.Parse()
	if o.duration <= 0 || o.duration > maxDuration {
		fmt.Fprintf(os.Stderr, "soak: -duration must be in (0, %v]\n", maxDuration)
		os.Exit(2)
	}
	rep, err := run(o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	rep.print(os.Stdout)
	if o.jsonFile != "" {
		if err := rep.writeJSON(o.jsonFile); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
	}
	if !rep.OK {
		os.Exit(1)
	}
}

// run does the whole soak; progress lines go to logw.
func run(o options, logw io.Writer) (*report, error) {
	step := func(s string) { fmt.Fprintf(logw, "%s  %s\n", time.Now().Format("15:04:05"), s) }
	// Build, warm-up, soak, settle and stop, each bounded: this is the cap.
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+4*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "credproxy-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	key := "sk-test-soak-" + randomHex(16)
	token := randomHex(24)
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	up, err := startUpstream(dir, key)
	if err != nil {
		return nil, err
	}
	defer up.close()
	step("building credproxy")
	bin, err := proctest.Build(ctx, dir)
	if err != nil {
		return nil, err
	}
	rep := &report{Machine: readMachine(), DurationSeconds: o.duration.Seconds(), Tolerance: o.tolerance}
	p, err := startWithFallback(bin, dir, up, tokenFile, key, token, rep)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			p.stop()
		}
	}()
	scan := newSecretScan(key)
	env := newEnv(p, up.addr, scan)
	step("warm-up and baseline")
	if err := warmUp(ctx, env); err != nil {
		return nil, err
	}
	rep.Baseline = stableBaseline(p)
	if rep.Baseline.Goroutines < 0 {
		return nil, errors.New("cannot read /debug/pprof/goroutine with the admin token")
	}
	step(fmt.Sprintf("soak: %v, %d workers", o.duration, workers()))
	rep.Kinds, rep.Peak = soak(ctx, env, p, o.duration)
	env.closeIdle()
	step(fmt.Sprintf("waiting up to %v for goroutines and fds to settle", o.settle))
	settle(p, rep, o)
	rep.UpstreamHanging = up.hanging.Load()
	rep.Upstream401 = up.unauthorized.Load()
	for _, path := range []string{"/metrics", "/leases"} {
		b, err := p.adminGet(path)
		if err != nil {
			return nil, fmt.Errorf("admin %s: %w", path, err)
		}
		scan.scan("admin "+path, b)
	}
	step("stopping credproxy, searching its output for the credential")
	rep.CredproxyErrorLogs = p.stop()
	stopped = true
	if err := errors.Join(scan.scanFile("audit (stdout)", p.auditFile), scan.scanFile("log (stderr)", p.logFile)); err != nil {
		return nil, err
	}
	rep.SecretHits, rep.SecretTotal = scan.result()
	rep.OK = rep.Settled && rep.SecretTotal == 0
	return rep, nil
}

// startWithFallback starts credproxy with `admin: {listen, tokenFile}`, or
// with `admin: ADDR` when the code is older and exits on the mapping form.
func startWithFallback(bin, dir string, up *upstream, tokenFile, key, token string, rep *report) (*proc, error) {
	cfg, err := writeConfig(dir, up.addr, up.caFile, tokenFile, false)
	if err != nil {
		return nil, err
	}
	p, err := startCredproxy(bin, cfg, dir, key, token)
	if !errors.Is(err, proctest.ErrExited) {
		return p, err
	}
	if cfg, err = writeConfig(dir, up.addr, up.caFile, tokenFile, true); err != nil {
		return nil, err
	}
	p, err2 := startCredproxy(bin, cfg, dir, key, token)
	if err2 != nil {
		return nil, errors.Join(err, err2)
	}
	rep.LegacyAdmin = true
	return p, nil
}

// warmUp takes the lease and opens the upstream connection, then closes
// the soak's idle tunnels, so the baseline holds what a soak may keep.
func warmUp(ctx context.Context, env *soakEnv) error {
	for i := range 200 {
		kind := kindGood
		if i%50 == 0 {
			kind = kindSSEFull
		}
		out, err := env.do(ctx, kind)
		if err != nil || out != "200" {
			return fmt.Errorf("warm-up %s: %q %v", kind, out, err)
		}
	}
	env.closeIdle()
	return nil
}

// stableBaseline samples until the goroutine count holds still for two
// readings 500 ms apart (at most 10 s): closed tunnels take a moment.
func stableBaseline(p *proc) sample {
	s := p.sample()
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		next := p.sample()
		if next.Goroutines == s.Goroutines && next.FDs == s.FDs {
			return next
		}
		s = next
	}
	return s
}

// soak runs the mix while sampling credproxy once a second for the peak.
func soak(ctx context.Context, env *soakEnv, p *proc, dur time.Duration) ([]kindResult, sample) {
	done := make(chan struct{})
	peakc := make(chan sample, 1)
	go func() {
		peak := p.sample()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				peakc <- peak
				return
			case <-t.C:
				s := p.sample()
				peak = sample{max(peak.Goroutines, s.Goroutines), max(peak.FDs, s.FDs), max(peak.RSSMiB, s.RSSMiB)}
			}
		}
	}()
	kinds := env.runMix(ctx, dur)
	close(done)
	return kinds, <-peakc
}

// settle polls every 500 ms, up to o.settle, until goroutines and fds are
// within o.tolerance of the baseline; then it takes the after-settle sample.
func settle(p *proc, rep *report, o options) {
	start := time.Now()
	within := func(s sample) bool {
		return s.Goroutines >= 0 && s.Goroutines <= rep.Baseline.Goroutines+o.tolerance &&
			s.FDs >= 0 && s.FDs <= rep.Baseline.FDs+o.tolerance
	}
	s := p.sample()
	for !within(s) && time.Since(start) < o.settle {
		time.Sleep(500 * time.Millisecond)
		s = p.sample()
	}
	rep.After, rep.Settled, rep.SettleSeconds = s, within(s), time.Since(start).Seconds()
	if rep.Settled {
		return
	}
	dump, err := p.adminGet("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return
	}
	rep.TopStacks = topStacks(dump, 8)
	if o.goroutineFile != "" {
		_ = os.WriteFile(o.goroutineFile, dump, 0o644)
	}
}

func workers() int {
	n := 0
	for _, l := range lanes {
		n += l.workers
	}
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
