package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
)

// proc is credproxy running as a separate process, so its goroutines, fds
// and memory are its own: read from /proc and from its admin API.
type proc struct {
	child     *proctest.Proc
	token     string // admin bearer token, for /debug/pprof and /leases
	roots     *x509.CertPool
	auditFile string // its stdout: the audit trail
	logFile   string // its stderr: the log
	logw      *os.File
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
// A config it rejects gives an error wrapping proctest.ErrExited.
func startCredproxy(bin, cfgFile, dir, key, token string) (*proc, error) {
	p := &proc{token: token, auditFile: filepath.Join(dir, "audit.jsonl"), logFile: filepath.Join(dir, "credproxy.log")}
	out, err := os.Create(p.auditFile)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own descriptor
	// The log is kept to be searched for the secret later.
	if p.logw, err = os.Create(p.logFile); err != nil {
		return nil, err
	}
	p.child, err = proctest.Start(proctest.Options{Bin: bin, Config: cfgFile, Args: []string{"--pprof"},
		Env: append(os.Environ(), "SOAK_API_KEY="+key), Stdout: out, Stderr: p.logw})
	if err != nil {
		p.logw.Close()
		tail, _ := os.ReadFile(p.logFile)
		return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(tail))
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

// stop sends SIGTERM (drain, revoke leases, exit) and kills it after 20s.
// It returns the number of ERROR log records.
func (p *proc) stop() int {
	_ = p.child.Stop(20 * time.Second)
	p.logw.Close()
	return p.child.ErrorLogs()
}

// adminGet fetches an admin path with the bearer token; anything but 200
// is an error.
func (p *proc) adminGet(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, body, err := p.child.Admin(ctx, "GET", path, p.token)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("%s: status %d", path, status)
	}
	return body, err
}

// sample is one reading of credproxy's resources.
type sample struct {
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`
	RSSMiB     float64 `json:"rss_mib"`
}

// sample reads goroutines from pprof, open fds and VmRSS from /proc; -1
// where unreadable.
func (p *proc) sample() sample {
	s := sample{Goroutines: -1, FDs: -1, RSSMiB: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := p.child.Goroutines(ctx, p.token); err == nil {
		s.Goroutines = n
	}
	if n, err := proctest.FDs(p.child.PID()); err == nil {
		s.FDs = n
	}
	if rss, _, err := proctest.Memory(p.child.PID()); err == nil {
		s.RSSMiB = float64(rss) / (1 << 20)
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
