package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// credproxyProc is credproxy running as a separate process, so its CPU time
// and memory can be read from /proc without counting the load generator.
type credproxyProc struct {
	child    *proctest.Proc
	proxyURL *url.URL
	roots    *x509.CertPool
	audit    string // file holding its stdout: the audit trail
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
	var args []string
	if pprof {
		args = append(args, "--pprof")
	}
	audit := filepath.Join(dir, name+"-audit.jsonl")
	out, err := os.Create(audit)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own descriptor
	child, err := proctest.Start(proctest.Options{Bin: bin, Config: cfgFile, Args: args,
		Env: append(os.Environ(), "BENCH_API_KEY="+key), Stdout: out, Stderr: &errorEcho{},
		StartTimeout: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	p := &credproxyProc{child: child, proxyURL: &url.URL{Scheme: "http", Host: child.ProxyAddr()}, audit: audit}
	pem, err := os.ReadFile(filepath.Join(dir, "credproxy-ca.pem"))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.roots = x509.NewCertPool()
	p.roots.AppendCertsFromPEM(pem)
	return p, nil
}

// errorEcho copies the first five ERROR records of credproxy's log, which
// proctest hands it a line at a time, to our stderr.
type errorEcho struct{ n int }

func (e *errorEcho) Write(line []byte) (int, error) {
	var rec struct{ Level string }
	if e.n < 5 && json.Unmarshal(line, &rec) == nil && rec.Level == "ERROR" {
		e.n++
		fmt.Fprintf(os.Stderr, "credproxy: %s\n", bytes.TrimSpace(line))
	}
	return len(line), nil
}

// stop sends SIGTERM (drain, revoke leases, exit 0) and kills it after 15s.
// It returns the number of ERROR log records.
func (p *credproxyProc) stop() int {
	_ = p.child.Stop(15 * time.Second)
	return p.child.ErrorLogs()
}

// memory returns VmRSS and VmHWM (peak RSS) in MiB.
func (p *credproxyProc) memory() (rss, peak float64, err error) {
	r, pk, err := proctest.Memory(p.child.PID())
	return float64(r) / (1 << 20), float64(pk) / (1 << 20), err
}

// profile saves a CPU profile of seconds from the admin listener's pprof.
func (p *credproxyProc) profile(file string, seconds int) error {
	return p.saveProfile(file, fmt.Sprintf("profile?seconds=%d", seconds))
}

// saveProfile saves /debug/pprof/<name> (profile, allocs, heap, …) to file.
func (p *credproxyProc) saveProfile(file, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	status, body, err := p.child.Admin(ctx, "GET", "/debug/pprof/"+name, adminToken)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("pprof: status %d", status)
	}
	return os.WriteFile(file, body, 0o644)
}

// metric returns the value of an unlabelled metric from /metrics, or -1.
func (p *credproxyProc) metric(name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, body, err := p.child.Admin(ctx, "GET", "/metrics", "")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
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
