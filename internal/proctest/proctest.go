// Package proctest runs credproxy as a child process, for tests and
// benchmarks: it builds cmd/credproxy, starts `credproxy run`, learns the
// bound addresses from the "credproxy started" log line, talks to the admin
// API and reads the child's resources from /proc. Nothing shipped imports it;
// writing the config is each caller's business.
package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrExited is credproxy exiting on its own: before "credproxy started"
// (how a config it rejects shows) or before Stop.
var ErrExited = errors.New("credproxy exited")

// Build compiles cmd/credproxy into dir/credproxy. It resolves the package
// path against the working directory, which must lie inside the module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "credproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/credproxy/credproxy/cmd/credproxy")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build credproxy: %w\n%s", err, out)
	}
	return bin, nil
}

// Options describe one `credproxy run --config Config Args...` process.
type Options struct {
	Bin, Config string
	Args        []string
	Dir         string    // its working directory; empty: ours
	Env         []string  // its whole environment; nil: ours
	Stdout      io.Writer // the audit trail; nil: discarded
	// Stderr receives the log one whole line per Write; nil: discarded.
	// Its write errors are ignored, so a full disk never stalls the child.
	Stderr       io.Writer
	StartTimeout time.Duration // for "credproxy started"; 0: 30 s
}

// Proc is a running credproxy.
type Proc struct {
	cmd                  *exec.Cmd
	log                  *logWatcher
	proxyAddr, adminAddr string
	done                 chan struct{} // closed once the process is reaped and its log read
	waitErr              error
}

// Start starts credproxy and waits for its "credproxy started" log line.
// If it exits first, the error wraps ErrExited; if the line does not come
// within o.StartTimeout, it is killed.
func Start(o Options) (*Proc, error) {
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	cmd := exec.Command(o.Bin, append([]string{"run", "--config", o.Config}, o.Args...)...)
	cmd.Dir, cmd.Env, cmd.Stdout = o.Dir, o.Env, o.Stdout
	log := &logWatcher{out: o.Stderr, started: make(chan [2]string, 1)}
	cmd.Stderr = log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start credproxy: %w", err)
	}
	p := &Proc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait() // returns once the log is copied
		log.flush()
		close(p.done)
	}()
	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case addrs := <-log.started:
		p.proxyAddr, p.adminAddr = addrs[0], addrs[1]
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%w before \"credproxy started\": %s", ErrExited, status(p.waitErr))
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("credproxy logged no \"credproxy started\" line within %s", o.StartTimeout)
	}
}

// ProxyAddr is the proxy listener's host:port.
func (p *Proc) ProxyAddr() string { return p.proxyAddr }

// AdminAddr is the admin listener's host:port.
func (p *Proc) AdminAddr() string { return p.adminAddr }

// PID is the process id, for CPU, Memory and FDs.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// ErrorLogs is the number of ERROR records in its log so far; after Stop,
// in the whole log.
func (p *Proc) ErrorLogs() int { return int(p.log.errors.Load()) }

// Stop sends SIGTERM (credproxy drains, revokes its leases and exits 0) and
// waits up to timeout, then kills it. It returns the exit error: nil for
// status 0, one wrapping ErrExited if the process had already exited.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("%w before Stop: %s", ErrExited, status(p.waitErr))
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.waitErr
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("credproxy did not exit within %s of SIGTERM; killed", timeout)
	}
}

func status(waitErr error) string {
	if waitErr == nil {
		return "exit status 0"
	}
	return waitErr.Error()
}

// logWatcher is the child's stderr: it splits the log into lines, passes
// each on, and watches for the started line and ERROR records. exec.Cmd
// calls Write from one goroutine only.
type logWatcher struct {
	out     io.Writer
	partial []byte
	started chan [2]string // proxy and admin address, sent once
	errors  atomic.Int64
}

func (w *logWatcher) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(w.partial[:i+1])
		w.partial = w.partial[i+1:]
	}
	w.partial = append([]byte(nil), w.partial...) // don't pin what was read
	return len(b), nil
}

// flush passes on a last line that has no newline.
func (w *logWatcher) flush() {
	if len(w.partial) > 0 {
		w.line(w.partial)
		w.partial = nil
	}
}

func (w *logWatcher) line(l []byte) {
	if w.out != nil {
		_, _ = w.out.Write(l)
	}
	var rec struct{ Msg, Level, Listen, Admin string }
	if json.Unmarshal(l, &rec) != nil {
		return // the "export HTTPS_PROXY=…" banner
	}
	switch {
	case rec.Msg == "credproxy started" && rec.Listen != "":
		select {
		case w.started <- [2]string{rec.Listen, rec.Admin}:
		default:
		}
	case rec.Level == "ERROR":
		w.errors.Add(1)
	}
}
