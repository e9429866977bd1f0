// Package testutil holds small helpers shared by credproxy's tests. It is
// imported only from tests (and internal/vaulttest).
package testutil

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer that one goroutine may read while others
// write: an audit trail or a child process's output under test.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor polls cond until it holds, failing the test after 15s with what
// it was waiting for. It is for events driven by real time in end-to-end
// tests (a 200ms idle timeout); unit tests use a fake clock instead.
func WaitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// LogWriter sends each write to t.Log, for a logger under test.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var auditEvent = regexp.MustCompile(`"event":"(lease\.[a-z]+)"`)

// AuditEvents lists the lease events in an audit trail, in order, joined
// with commas: "lease.created,lease.revoked,lease.created".
func AuditEvents(audit string) string {
	var seq []string
	for _, m := range auditEvent.FindAllStringSubmatch(audit, -1) {
		seq = append(seq, m[1])
	}
	return strings.Join(seq, ",")
}
