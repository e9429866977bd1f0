package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/credproxy/credproxy/proxy"
)

// bareProc is bench/bare, the minimal goproxy MITM proxy, running as its
// own process like credproxy.
type bareProc struct {
	cmd       *exec.Cmd
	proxyURL  *url.URL
	roots     *x509.CertPool // its own ECDSA P-256 CA
	pprofAddr string
}

// startBare builds bench/bare into dir and starts it with a fresh CA of its
// own, the upstream's CA as root, and the real key for host. It waits for
// the "listening" line, at most 15 s.
func startBare(ctx context.Context, dir, upstreamCA, host, key string) (*bareProc, error) {
	bin := filepath.Join(dir, "bare")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/credproxy/credproxy/bench/bare")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build bench/bare: %w\n%s", err, out)
	}
	certFile, keyFile := filepath.Join(dir, "bare-ca.pem"), filepath.Join(dir, "bare-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile) // ECDSA P-256
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-ca", certFile, "-ca-key", keyFile, "-upstream-ca", upstreamCA,
		"-host", host, "-pprof", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "BARE_API_KEY="+key)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &bareProc{cmd: cmd, roots: x509.NewCertPool()}
	b.roots.AppendCertsFromPEM(ca.PEM())
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for b.proxyURL == nil {
		select {
		case line, ok := <-lines:
			if !ok {
				b.stop()
				return nil, fmt.Errorf("bench/bare exited before listening")
			}
			if a, ok := strings.CutPrefix(line, "pprof "); ok {
				b.pprofAddr = a
			}
			if a, ok := strings.CutPrefix(line, "listening "); ok {
				b.proxyURL = &url.URL{Scheme: "http", Host: a}
			}
		case <-timer.C:
			b.stop()
			return nil, fmt.Errorf("bench/bare printed no listening line within 15s")
		}
	}
	go func() { // drain the rest, so its stdout never blocks
		for range lines {
		}
	}()
	return b, nil
}

func (b *bareProc) pid() int { return b.cmd.Process.Pid }

// stop kills the process (it holds no state worth draining) and reaps it.
func (b *bareProc) stop() {
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

// profile saves a CPU profile of seconds from its pprof listener.
func (b *bareProc) profile(file string, seconds int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprofAddr, seconds), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bare pprof: status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}
