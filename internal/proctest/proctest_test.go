package proctest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
)

func TestLogWatcher(t *testing.T) {
	var out testutil.SyncBuffer
	w := &logWatcher{out: &out, started: make(chan [2]string, 1)}
	log := "export HTTPS_PROXY=http://127.0.0.1:1\n" +
		`{"level":"ERROR","msg":"x"}` + "\n" +
		`{"level":"INFO","msg":"credproxy started","listen":"","admin":"127.0.0.1:9"}` + "\n" +
		`{"level":"INFO","msg":"credproxy started","listen":"127.0.0.1:1","admin":"127.0.0.1:2"}` + "\n" +
		`{"level":"ERROR","msg":"last, no newline"}`
	for chunk := range strings.SplitSeq(log, "r") { // split mid-line
		if _, err := w.Write([]byte(chunk + "r")); err != nil {
			t.Fatal(err)
		}
	}
	w.partial = w.partial[:len(w.partial)-1] // the "r" after the last chunk
	w.flush()
	if got := out.String(); got != log {
		t.Errorf("passed on %q, expected the log unchanged %q", got, log)
	}
	select {
	case a := <-w.started:
		if a != [2]string{"127.0.0.1:1", "127.0.0.1:2"} {
			t.Errorf("started at %v, expected the line with a listen address", a)
		}
	default:
		t.Errorf("expected the started line to be reported; it was not")
	}
	if n := w.errors.Load(); n != 2 {
		t.Errorf("expected 2 ERROR records, counted %d", n)
	}
}

func TestGoroutineTotal(t *testing.T) {
	for _, c := range []struct {
		dump string
		want int
		ok   bool
	}{
		{"goroutine profile: total 42\n1 @ 0x1\n", 42, true},
		{"goroutine profile: total 7", 7, true},
		{"404 page not found\n", 0, false},
		{"goroutine profile: total x\n", 0, false},
	} {
		n, err := goroutineTotal([]byte(c.dump))
		if n != c.want || (err == nil) != c.ok {
			t.Errorf("goroutineTotal(%q) = %d, %v; expected %d, ok %v", c.dump, n, err, c.want, c.ok)
		}
	}
}

func TestAdminGoroutines(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte("goroutine profile: total 5\n"))
	}))
	defer srv.Close()
	p := &Proc{adminAddr: strings.TrimPrefix(srv.URL, "http://")}
	if n, err := p.Goroutines(context.Background(), "tok"); n != 5 || err != nil {
		t.Errorf("Goroutines with the token: %d, %v; expected 5", n, err)
	}
	if _, err := p.Goroutines(context.Background(), ""); err == nil {
		t.Errorf("Goroutines without the token: expected an error for the 401")
	}
}

func TestProcReaders(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	if cpu, err := CPU(pid); err != nil || cpu < 0 {
		t.Errorf("CPU(self) = %v, %v; expected a time", cpu, err)
	}
	if rss, peak, err := Memory(pid); err != nil || rss <= 0 || peak < rss {
		t.Errorf("Memory(self) = %d, %d, %v; expected 0 < rss <= peak", rss, peak, err)
	}
	if n, err := FDs(pid); err != nil || n < 3 {
		t.Errorf("FDs(self) = %d, %v; expected at least stdin, stdout, stderr", n, err)
	}
	if _, _, err := Memory(-1); err == nil {
		t.Errorf("Memory(-1): expected an error")
	}
}

// fake writes a shell script that stands in for credproxy.
func fake(t *testing.T, body string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "credproxy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartStop(t *testing.T) {
	bin := fake(t, `trap 'echo "{\"level\":\"ERROR\",\"msg\":\"stopping\"}" >&2; exit 0' TERM
echo "audit $3"
echo '{"level":"INFO","msg":"credproxy started","listen":"127.0.0.1:1","admin":"127.0.0.1:2"}' >&2
while :; do sleep 0.05; done
`)
	var out, log testutil.SyncBuffer
	p, err := Start(Options{Bin: bin, Config: "cfg.yaml", Stdout: &out, Stderr: &log})
	if err != nil {
		t.Fatalf("Start: %v; expected it to see the started line", err)
	}
	if p.ProxyAddr() != "127.0.0.1:1" || p.AdminAddr() != "127.0.0.1:2" {
		t.Errorf("addresses %q, %q; expected 127.0.0.1:1 and 127.0.0.1:2", p.ProxyAddr(), p.AdminAddr())
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("Stop: %v; expected exit status 0", err)
	}
	if n := p.ErrorLogs(); n != 1 {
		t.Errorf("expected the ERROR record logged at SIGTERM to be counted; counted %d\nlog: %s", n, log.String())
	}
	if got := out.String(); got != "audit cfg.yaml\n" {
		t.Errorf("stdout %q; expected the args run --config cfg.yaml to reach it", got)
	}
	if err := p.Stop(time.Second); !errors.Is(err, ErrExited) {
		t.Errorf("a second Stop: %v; expected ErrExited", err)
	}
}

func TestStartExits(t *testing.T) {
	var log testutil.SyncBuffer
	_, err := Start(Options{Bin: fake(t, "echo 'config: bad' >&2; exit 3\n"), Stderr: &log})
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Start of a process that exits: %v; expected ErrExited with exit status 3", err)
	}
	if log.String() != "config: bad\n" {
		t.Errorf("log %q; expected all it wrote before exiting", log.String())
	}
}

func TestStartTimeout(t *testing.T) {
	start := time.Now()
	_, err := Start(Options{Bin: fake(t, "exec sleep 30\n"), StartTimeout: 200 * time.Millisecond})
	if err == nil || errors.Is(err, ErrExited) || time.Since(start) > 10*time.Second {
		t.Errorf("Start of a process that never logs: %v after %v; expected a timeout and a kill", err, time.Since(start))
	}
}
