package testutil

import (
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Daemon is a test server run as a child process (the Vault dev server, the
// OAuth authorization server): started, waited for until ready, killed like
// a crash, restarted on the same port. The zero value is stopped.
type Daemon struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{} // closed when cmd has exited
}

// Start runs cmd, its output captured, and calls ready until it returns nil
// (the daemon is up), an error (it failed; the process is killed) or the
// process exits. ready is passed a channel closed when the process exits,
// for a readiness check that blocks. Starting a running Daemon is an error.
func (d *Daemon) Start(cmd *exec.Cmd, ready func(exited <-chan struct{}) error) error {
	d.mu.Lock()
	running := d.cmd != nil
	d.mu.Unlock()
	if running {
		return fmt.Errorf("%s: already running", cmd.Path)
	}
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := ready(done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w\n--- %s output ---\n%s", err, cmd.Path, out.String())
	}
	d.mu.Lock()
	d.cmd, d.done, d.out = cmd, done, out
	d.mu.Unlock()
	return nil
}

// Stop kills the process (nothing is shut down cleanly) and waits for it to
// exit. Calling it again, or on a stopped Daemon, does nothing.
func (d *Daemon) Stop() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Output returns what the running (or last) process has printed so far.
func (d *Daemon) Output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out == nil {
		return ""
	}
	return d.out.String()
}

// Retry calls start up to n times, pausing between tries, and fails the test
// with what the last try said. It is for starting a daemon on a port that
// may be taken before the daemon binds it, or that lingers after a kill.
func Retry(t testing.TB, what string, n int, pause time.Duration, start func() error) {
	t.Helper()
	var err error
	for i := range n {
		if err = start(); err == nil {
			return
		}
		if i < n-1 {
			time.Sleep(pause)
		}
	}
	t.Fatalf("%s: %v", what, err)
}
