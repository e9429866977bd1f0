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
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// credproxyProc is credproxy running as a separate process, so its CPU time
// and memory can be read from /proc without counting the load generator.
type credproxyProc struct {
	cmd      *exec.Cmd
	pid      int
	proxyURL *url.URL
	admin    string // host:port of the admin listener
	roots    *x509.CertPool
	audit    string // file holding its stdout: the audit trail
	errors   chan int
	exited   chan error
}

// buildCredproxy compiles cmd/credproxy into dir. The load runs inside the
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

// benchConfig is the rules file. Hosts are IP literals on loopback, so
// nothing resolves through DNS: `bench` is the upstream itself; `hosts`
// lists addresses in 127.1.0.0/16 on the upstream's port, where nothing
// listens (the upstream is bound to 127.0.0.1 only), so each is a distinct
// MITM'd host whose leaf is minted and cached, and whose request then gets
// a fast 502 (connection refused).
func writeConfig(dir, upstreamAddr, upstreamCA string, hosts []string) (string, error) {
	var b strings.Builder
	// The admin API (pprof included) needs a bearer token.
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(adminToken), 0o600); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, `listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: %[1]s/admin-token}
identity: bench
ca: {cert: %[1]s/credproxy-ca.pem, key: %[1]s/credproxy-ca-key.pem}
upstream: {caFiles: [%[2]s]}
unmatched: deny
credentials:
  bench: {source: env, env: BENCH_API_KEY}
rules:
  - name: bench
    hosts: ["%[3]s"]
    credential: bench
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: hosts
    credential: bench
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
    hosts:
`, dir, upstreamCA, upstreamAddr)
	for _, h := range hosts {
		fmt.Fprintf(&b, "      - %q\n", h)
	}
	file := filepath.Join(dir, "rules.yaml")
	return file, os.WriteFile(file, []byte(b.String()), 0o600)
}

// adminToken is the bench's admin API token: a test value, on loopback only.
const adminToken = "bench-admin-token-0123456789abcdef"

// startCredproxy runs `credproxy run` with the key in its environment and
// waits for its "credproxy started" log line, which names the bound ports.
func startCredproxy(bin, cfgFile, dir, name, key string, pprof bool) (*credproxyProc, error) {
	args := []string{"run", "--config", cfgFile}
	if pprof {
		args = append(args, "--pprof")
	}
	audit := filepath.Join(dir, name+"-audit.jsonl")
	out, err := os.Create(audit)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "BENCH_API_KEY="+key)
	cmd.Stdout = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start credproxy: %w", err)
	}
	p := &credproxyProc{cmd: cmd, pid: cmd.Process.Pid, audit: audit, errors: make(chan int, 1), exited: make(chan error, 1)}
	ready := make(chan [2]string, 1)
	go p.readLog(stderr, ready)
	go func() { p.exited <- cmd.Wait() }()
	select {
	case addrs := <-ready:
		p.proxyURL = &url.URL{Scheme: "http", Host: addrs[0]}
		p.admin = addrs[1]
	case err := <-p.exited:
		return nil, fmt.Errorf("credproxy exited at start: %v", err)
	case <-time.After(15 * time.Second):
		p.stop()
		return nil, errors.New("credproxy did not log \"credproxy started\" within 15s")
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

// readLog scans credproxy's JSON log: it reports the bound addresses, and
// when the log ends, how many ERROR records it held (echoed to our stderr).
func (p *credproxyProc) readLog(r io.Reader, ready chan<- [2]string) {
	errs := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct{ Msg, Level, Listen, Admin string }
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // the "export HTTPS_PROXY=…" banner
		}
		switch {
		case rec.Msg == "credproxy started":
			ready <- [2]string{rec.Listen, rec.Admin}
		case rec.Level == "ERROR":
			errs++
			if errs <= 5 {
				fmt.Fprintf(os.Stderr, "credproxy: %s\n", sc.Bytes())
			}
		}
	}
	p.errors <- errs
}

// stop sends SIGTERM (drain, revoke leases, exit 0) and kills it after 15s.
// It returns the number of ERROR log records.
func (p *credproxyProc) stop() int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
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

// procCPU is a process's user+system CPU time so far. /proc/PID/stat counts
// it in clock ticks, which are 1/100 s on Linux (USER_HZ).
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" closing the command name start at field 3 (state);
	// utime and stime are fields 14 and 15.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// memory returns VmRSS and VmHWM (peak RSS) in MiB from /proc/PID/status.
func (p *credproxyProc) memory() (rss, peak float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", p.pid, k, err)
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			peak = kb / 1024
		}
	}
	return rss, peak, nil
}

// profile saves a CPU profile of seconds from the admin listener's pprof.
func (p *credproxyProc) profile(file string, seconds int) error {
	return p.saveProfile(file, fmt.Sprintf("profile?seconds=%d", seconds))
}

// saveProfile saves /debug/pprof/<name> (profile, allocs, heap, …) to file.
func (p *credproxyProc) saveProfile(file, name string) error {
	c := &http.Client{Timeout: 2 * time.Minute}
	req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/debug/pprof/%s", p.admin, name), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// metric returns the value of an unlabelled metric from /metrics, or -1.
func (p *credproxyProc) metric(name string) float64 {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// countCreated counts lease.created audit lines for credential.
func countCreated(auditFile, credential string) (int, error) {
	f, err := os.Open(auditFile)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Event, Credential string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Event == "lease.created" && e.Credential == credential {
			n++
		}
	}
	return n, sc.Err()
}
