package exec_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/exec"
)

// counting is a helper that appends a line to $RUNS on every run and prints
// sk-test-run-N (N the run's number), as JSON with expires_in $LIFE when
// LIFE is set; it fails with status 7 while the file $BROKEN exists.
const counting = `if [ -e "$BROKEN" ]; then echo "store locked" >&2; exit 7; fi
echo run >> "$RUNS"
n=$(wc -l < "$RUNS" | tr -d ' ')
if [ -n "$LIFE" ]; then
  printf '{"value": "sk-test-run-%s", "expires_in": %s}\n' "$n" "$LIFE"
else
  echo "sk-test-run-$n"
fi`

// countingConfig is a Config for counting, with its files in a temp dir.
func countingConfig(t *testing.T, life string) (cfg exec.Config, runsFile, brokenFile string) {
	t.Helper()
	dir := t.TempDir()
	runsFile, brokenFile = filepath.Join(dir, "runs"), filepath.Join(dir, "broken")
	return exec.Config{Name: "vaultctl", Command: []string{script(t, counting)},
		Env: map[string]string{"RUNS": runsFile, "BROKEN": brokenFile, "LIFE": life}}, runsFile, brokenFile
}

// A thousand first requests at once share one acquisition: the helper runs
// once.
func TestConcurrentFirstGetsRunTheHelperOnce(t *testing.T) {
	cfg, runsFile, _ := countingConfig(t, "")
	e := newManager(t, cfg, lease.Policy{TTL: 15 * time.Minute, AutoRenew: true, IdleTimeout: 10 * time.Minute})
	const n = 1000
	for i, v := range e.FirstGets(t, n) {
		if v != "sk-test-run-1" {
			t.Fatalf("Get %d: value %q; want sk-test-run-1 for all", i, v)
		}
	}
	if r := runs(t, runsFile); r != 1 {
		t.Errorf("the helper ran %d times for %d concurrent first Gets; want 1", r, n)
	}
	if got := testutil.AuditEvents(e.Audit.String()); got != "lease.created" {
		t.Errorf("audit events %s; want lease.created", got)
	}
}

// A credential that lives 2s, under steady use: the helper runs again before
// each one expires, and no Get fails. Lease time is a fake clock moved in
// 100ms steps; when a rotation is due the test waits for the replacement
// lease (an event) before time moves on.
func TestShortLivedCredentialReRunBeforeExpiry(t *testing.T) {
	cfg, runsFile, _ := countingConfig(t, "2")
	e := newManager(t, cfg, lease.Policy{TTL: 15 * time.Minute, RenewBeforeExpiry: 5 * time.Minute, IdleTimeout: 10 * time.Minute, AutoRenew: true})
	order := []string{e.Get(t).Value}
	cur := e.Current(t, "")
	if term := cur.Expires.Sub(cur.Issued); term != 2*time.Second {
		t.Fatalf("lease term %v; want the helper's expires_in, 2s", term)
	}
	rotations := 0
	for i := 1; i <= 50; i++ { // 5s of fake time
		e.Clock.Advance(100 * time.Millisecond)
		if term := cur.Expires.Sub(cur.Issued); !e.Clock.Now().Before(cur.Expires.Add(-term / 2)) {
			old := cur
			cur = e.Current(t, old.ID)
			if !cur.Issued.Before(old.Expires) {
				t.Fatalf("replacement issued at %v, after the old credential expired at %v", cur.Issued, old.Expires)
			}
			rotations++
		}
		tk := e.Get(t) // a failure is fatal: zero failed Gets
		if tk.Value != order[len(order)-1] {
			order = append(order, tk.Value)
		}
	}
	if rotations < 4 || len(order) != rotations+1 || runs(t, runsFile) != len(order) {
		t.Errorf("%d rotations, %d distinct values, %d runs over 5s of 2s credentials; want >= 4 rotations, one more value, one run per value",
			rotations, len(order), runs(t, runsFile))
	}
	audit := e.Audit.String()
	if strings.Contains(audit, "lease.failed") || strings.Count(audit, `"reason":"rotated"`) < rotations-1 {
		t.Errorf("want no failure and a lease.revoked (rotated) per rotation:\n%s", audit)
	}
}

// An idle lease is dropped and audited; the revokeCommand is given its
// value.
func TestIdleLeaseDropped(t *testing.T) {
	cfg, runsFile, _ := countingConfig(t, "")
	revoked := filepath.Join(t.TempDir(), "revoked")
	cfg.RevokeCommand = []string{script(t, `cat >> "$REVOKED"`)}
	cfg.Env["REVOKED"] = revoked
	e := newManager(t, cfg, lease.Policy{TTL: 15 * time.Minute, IdleTimeout: time.Minute, AutoRenew: true})
	v := e.Get(t).Value
	e.Clock.Advance(61 * time.Second)
	testutil.WaitFor(t, func() bool { return strings.Contains(e.Audit.String(), `"reason":"idle"`) }, "the idle revocation")
	if got := testutil.AuditEvents(e.Audit.String()); got != "lease.created,lease.revoked" {
		t.Errorf("audit events %s; want lease.created,lease.revoked", got)
	}
	if l := e.M.List(); len(l) != 0 {
		t.Errorf("the manager still holds %v", l)
	}
	if b, _ := os.ReadFile(revoked); string(b) != v+"\n" {
		t.Errorf("the revokeCommand read %q; want the idle lease's value", b)
	}
	// The next use runs the helper again.
	if v2 := e.Get(t).Value; v2 == v || runs(t, runsFile) != 2 {
		t.Errorf("after idle: value %q (was %q), %d runs; want a fresh run", v2, v, runs(t, runsFile))
	}
	notIn(t, []string{v}, map[string]string{"audit": e.Audit.String(), "logs": e.Logs.String()})
}

// A failing helper: Get fails naming the credential, the audit trail has a
// lease.failed with the exit status and none of its output; once the helper
// works again (and the backoff has passed), Get recovers.
func TestFailingHelperThenRecovery(t *testing.T) {
	cfg, runsFile, broken := countingConfig(t, "")
	if err := os.WriteFile(broken, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newManager(t, cfg, lease.Policy{TTL: 15 * time.Minute, IdleTimeout: 10 * time.Minute, AutoRenew: true})
	_, err := e.M.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
	if err == nil || !strings.Contains(err.Error(), `credential "api"`) || !strings.Contains(err.Error(), "status 7") {
		t.Fatalf("Get with a failing helper: %v; want an error naming the credential and the exit status", err)
	}
	if msg := lease.PublicMessage(err); msg != `credential "api": store vaultctl unavailable` {
		t.Errorf("PublicMessage %q", msg)
	}
	audit := e.Audit.String()
	if testutil.AuditEvents(audit) != "lease.failed" || !strings.Contains(audit, "exec vaultctl: helper exited with status 7") ||
		strings.Contains(audit, "store locked") {
		t.Errorf("want one lease.failed with the exit status and not the helper's stderr:\n%s", audit)
	}
	if !strings.Contains(e.Logs.String(), `"line":"store locked"`) {
		t.Errorf("the helper's stderr is not in the log:\n%s", e.Logs.String())
	}
	os.Remove(broken)
	e.Clock.Advance(time.Second) // past the first backoff (250ms)
	if v := e.Get(t).Value; v != "sk-test-run-1" || runs(t, runsFile) != 1 {
		t.Errorf("after recovery: %q, %d runs", v, runs(t, runsFile))
	}
}
