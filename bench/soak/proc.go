package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is credproxy running as a separate process, so its goroutines, fds
// and memory are its own: read from /proc and from its admin API.
type proc struct {
	cmd       *exec.Cmd
	pid       int
	proxyAddr string // host:port of the proxy listener
	admin     string // host:port of the admin listener
	token     string // admin bearer token, for /debug/pprof and /leases
	roots     *x509.CertPool
	auditFile string // its stdout: the audit trail
	logFile   string // its stderr: the log
	errors    chan int
	exited    chan error
	adminc    *http.Client
}

// errExitedAtStart is credproxy exiting before "credproxy started", which
// is how a config it rejects shows.
var errExitedAtStart = errors.New("credproxy exited at start")

// buildCredproxy compiles cmd/credproxy into dir; the soak runs inside the
// module, so the package path resolves against it.
func buildCredproxy(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "credproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/credproxy/credproxy/cmd/credproxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build credproxy: %w", err)
	}
	return bin, nil
}

// writeConfig writes the rules file: one rule for the upstream, an IP
// literal on loopback, so nothing goes through DNS. legacyAdmin writes
// `admin: ADDR`, for code older than admin.tokenFile.
func writeConfig(dir, upstreamAddr, upstreamCA, tokenFile string, legacyAdmin bool) (string, error) {
	admin := fmt.Sprintf("{listen: 127.0.0.1:0, tokenFile: %s}", tokenFile)
	if legacyAdmin {
		admin = "127.0.0.1:0"
	}
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: %[4]s
identity: soak
ca: {cert: %[1]s/credproxy-ca.pem, key: %[1]s/credproxy-ca-key.pem}
upstream: {caFiles: [%[2]s]}
unmatched: deny
credentials:
  soak: {source: env, env: SOAK_API_KEY}
rules:
  - name: soak
    hosts: ["%[3]s"]
    credential: soak
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`, dir, upstreamCA, upstreamAddr, admin)
	file := filepath.Join(dir, "rules.yaml")
	return file, os.WriteFile(file, []byte(cfg), 0o600)
}

// startCredproxy runs `credproxy run --pprof` with the key in its
// environment and waits for the "credproxy started" line naming its ports.
func startCredproxy(bin, cfgFile, dir, key, token string) (*proc, error) {
	p := &proc{
		token: token, auditFile: filepath.Join(dir, "audit.jsonl"), logFile: filepath.Join(dir, "credproxy.log"),
		errors: make(chan int, 1), exited: make(chan error, 1),
		adminc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	out, err := os.Create(p.auditFile)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own descriptor
	logw, err := os.Create(p.logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfgFile, "--pprof")
	cmd.Env = append(os.Environ(), "SOAK_API_KEY="+key)
	cmd.Stdout = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the soak
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logw.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logw.Close()
		return nil, fmt.Errorf("start credproxy: %w", err)
	}
	p.cmd, p.pid = cmd, cmd.Process.Pid
	ready := make(chan [2]string, 1)
	logDone := make(chan struct{})
	go func() { defer close(logDone); p.readLog(stderr, logw, ready) }()
	go func() { <-logDone; p.exited <- cmd.Wait() }() // Wait only once the pipe is drained
	select {
	case addrs := <-ready:
		p.proxyAddr, p.admin = addrs[0], addrs[1]
	case err := <-p.exited:
		tail, _ := os.ReadFile(p.logFile)
		return nil, fmt.Errorf("%w (%v): %s", errExitedAtStart, err, bytes.TrimSpace(tail))
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, errors.New("credproxy did not log \"credproxy started\" within 30s")
	}
	pem, err := os.ReadFile(filepath.Join(dir, "credproxy-ca.pem"))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.roots = x509.NewCertPool()
	p.roots.AppendCertsFromPEM(pem)
	return p, nil
}

// readLog copies credproxy's log to logw (to be searched for the secret
// later), reports the bound addresses and, at the end, the ERROR count.
func (p *proc) readLog(r io.Reader, logw *os.File, ready chan<- [2]string) {
	defer logw.Close()
	errs := 0
	br := bufio.NewReader(io.TeeReader(r, logw))
	for {
		line, err := br.ReadBytes('\n')
		var rec struct{ Msg, Level, Listen, Admin string }
		if json.Unmarshal(line, &rec) == nil {
			switch {
			case rec.Msg == "credproxy started":
				ready <- [2]string{rec.Listen, rec.Admin}
			case rec.Level == "ERROR":
				errs++
			}
		}
		if err != nil {
			break
		}
	}
	p.errors <- errs
}

// stop sends SIGTERM (drain, revoke leases, exit) and kills it after 20s.
// It returns the number of ERROR log records.
func (p *proc) stop() int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	select {
	case n := <-p.errors:
		return n
	case <-time.After(time.Second):
		return 0
	}
}

// adminGet fetches an admin path with the bearer token, on a new
// connection each time, so the soak holds no admin socket between reads.
func (p *proc) adminGet(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", "http://"+p.admin+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.adminc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", path, resp.Status)
	}
	return body, err
}

// sample is one reading of credproxy's resources.
type sample struct {
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`
	RSSMiB     float64 `json:"rss_mib"`
}

// sample reads goroutines from pprof ("goroutine profile: total N"), open
// fds from /proc/PID/fd and VmRSS from /proc/PID/status; -1 where unreadable.
func (p *proc) sample() sample {
	s := sample{Goroutines: -1, FDs: -1, RSSMiB: -1}
	if b, err := p.adminGet("/debug/pprof/goroutine?debug=1"); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		if n, ok := strings.CutPrefix(first, "goroutine profile: total "); ok {
			s.Goroutines, _ = strconv.Atoi(strings.TrimSpace(n))
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid)); err == nil {
		s.FDs = len(ents)
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid)); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				s.RSSMiB = kb / 1024
			}
		}
	}
	return s
}

// topStacks returns up to n groups of two or more goroutines from a
// /debug/pprof/goroutine?debug=1 dump, as "COUNT func <- caller <- …".
func topStacks(dump []byte, n int) []string {
	var out []string
	for _, rec := range strings.Split(string(dump), "\n\n") {
		lines := strings.Split(strings.TrimSpace(rec), "\n")
		if strings.HasPrefix(lines[0], "goroutine profile:") {
			lines = lines[1:] // the first record starts with the total
		}
		if len(lines) == 0 {
			continue
		}
		count, _, ok := strings.Cut(lines[0], " @ ")
		if c, err := strconv.Atoi(count); !ok || err != nil || c < 2 {
			continue
		}
		var frames []string
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && len(frames) < 4 {
				fn, _, _ := strings.Cut(f[2], "+0x")
				frames = append(frames, fn)
			}
		}
		out = append(out, count+" "+strings.Join(frames, " <- "))
		if len(out) == n { // debug=1 lists the largest groups first
			break
		}
	}
	return out
}
