package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
	"github.com/credproxy/credproxy/proxy"
)

// startBare builds bench/bare into dir and starts it with a fresh ECDSA
// P-256 CA of its own (never goproxy's built-in one), the upstream's CA as
// its root and the real key for host. It waits at most 15 s for the
// "listening ADDR" line.
func startBare(ctx context.Context, dir, upstreamCA, host, key string) (*exec.Cmd, *url.URL, *x509.CertPool, error) {
	bin := filepath.Join(dir, "bare")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/credproxy/credproxy/bench/bare")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, nil, nil, fmt.Errorf("go build bench/bare: %w\n%s", err, out)
	}
	certFile, keyFile := filepath.Join(dir, "bare-ca.pem"), filepath.Join(dir, "bare-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile)
	if err != nil {
		return nil, nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	cmd := exec.Command(bin, "-ca", certFile, "-ca-key", keyFile, "-upstream-ca", upstreamCA, "-host", host)
	cmd.Env = append(os.Environ(), "BARE_API_KEY="+key)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
		for sc.Scan() { // drain, so its stdout never blocks
		}
	}()
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	select {
	case line, ok := <-first:
		addr, found := strings.CutPrefix(line, "listening ")
		if !ok || !found {
			stop()
			return nil, nil, nil, fmt.Errorf("bench/bare: first line %q, want \"listening ADDR\"", line)
		}
		return cmd, &url.URL{Scheme: "http", Host: addr}, roots, nil
	case <-time.After(15 * time.Second):
		stop()
		return nil, nil, nil, fmt.Errorf("bench/bare printed no listening line within 15s")
	}
}

// writeConfig writes credproxy's rules: one rule injecting the key for the
// upstream's host:port, everything else denied.
func writeConfig(dir, upstreamAddr, upstreamCA string) (string, error) {
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
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
`, dir, upstreamCA, upstreamAddr)
	file := filepath.Join(dir, "rules.yaml")
	return file, os.WriteFile(file, []byte(cfg), 0o600)
}

// startCredproxy builds and starts credproxy through internal/proctest.
func startCredproxy(ctx context.Context, dir, upstreamAddr, upstreamCA, key string) (*proctest.Proc, *url.URL, *x509.CertPool, error) {
	bin, err := proctest.Build(ctx, dir)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := writeConfig(dir, upstreamAddr, upstreamCA)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := proctest.Start(proctest.Options{Bin: bin, Config: cfg,
		Env: append(os.Environ(), "BENCH_API_KEY="+key), StartTimeout: 15 * time.Second})
	if err != nil {
		return nil, nil, nil, err
	}
	pem, err := os.ReadFile(filepath.Join(dir, "credproxy-ca.pem"))
	if err != nil {
		_ = p.Stop(15 * time.Second)
		return nil, nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return p, &url.URL{Scheme: "http", Host: p.ProxyAddr()}, roots, nil
}
