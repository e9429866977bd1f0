package exec_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/exec"
)

func TestSingleLine(t *testing.T) {
	e := newSource(t, exec.Config{}, `printf 'sk-test-line-0123456789\n\n'`)
	g := e.acquire(t)
	if g.Value != "sk-test-line-0123456789" || !reflect.DeepEqual(g.Data, map[string]string{"value": g.Value}) {
		t.Errorf("grant value %q data %v; want the line, trailing newlines trimmed", g.Value, g.Data)
	}
	if g.TTL != 0 || g.Renewable || g.SourceLeaseID != "" {
		t.Errorf("TTL %v renewable %v id %q; want no expiry (the credential's TTL), not renewable", g.TTL, g.Renewable, g.SourceLeaseID)
	}
	if _, err := e.src.Renew(context.Background(), g, time.Minute); !errors.Is(err, lease.ErrPermanent) {
		t.Errorf("Renew: %v; want ErrPermanent (the helper runs again instead)", err)
	}
	if err := e.src.Revoke(context.Background(), g); err != nil {
		t.Errorf("Revoke: %v; want a no-op", err)
	}
}

func TestJSONValueFieldsExpiresIn(t *testing.T) {
	e := newSource(t, exec.Config{}, `cat <<'EOF'
{"value": "sk-test-json-0123456789",
 "fields": {"username": "svc-agent-0001", "password": "sk-test-pass-0123456789"},
 "expires_in": 120}
EOF`)
	g := e.acquire(t)
	want := map[string]string{"value": "sk-test-json-0123456789", "username": "svc-agent-0001", "password": "sk-test-pass-0123456789"}
	if g.Value != "sk-test-json-0123456789" || !reflect.DeepEqual(g.Data, want) || g.TTL != 120*time.Second {
		t.Errorf("grant value %q data %v TTL %v; want the value, its fields and 120s", g.Value, g.Data, g.TTL)
	}
}

// expires_at counts from the (fake) clock the manager keeps; a single field
// with no "value" is the value.
func TestJSONExpiresAt(t *testing.T) {
	e := newSource(t, exec.Config{}, `echo '{"fields": {"token": "sk-test-tok-0123456789"}, "expires_at": "2026-12-01T10:01:30Z"}'`)
	g := e.acquire(t)
	if g.Value != "sk-test-tok-0123456789" || len(g.Data) != 1 || g.TTL != 90*time.Second {
		t.Errorf("grant value %q data %v TTL %v; want the one field as the value and 90s to expires_at", g.Value, g.Data, g.TTL)
	}
	e.clock.Advance(2 * time.Minute)
	if err := e.acquireErr(t); !strings.Contains(err.Error(), "expired at 2026-12-01T10:01:30Z") {
		t.Errorf("an expiry in the past: %v; want an error saying it expired", err)
	}
}

// The AWS credential_process shape: the key's parts go to Data under the
// names SigV4 signing reads; Version and Expiration stay out of it, since
// every Data value is masked in responses.
func TestAWSCredentialProcess(t *testing.T) {
	e := newSource(t, exec.Config{}, `cat <<'EOF'
{
  "Version": 1,
  "AccessKeyId": "AKIDCREDPROXYTEST01",
  "SecretAccessKey": "sk-test-aws-secret-0123456789",
  "SessionToken": "sk-test-aws-session-0123456789",
  "Expiration": "2026-12-01T11:00:00Z"
}
EOF`)
	g := e.acquire(t)
	want := map[string]string{"AccessKeyId": "AKIDCREDPROXYTEST01",
		"SecretAccessKey": "sk-test-aws-secret-0123456789", "SessionToken": "sk-test-aws-session-0123456789"}
	if !reflect.DeepEqual(g.Data, want) || g.Value != want["SecretAccessKey"] || g.TTL != time.Hour {
		t.Errorf("grant value %q data %v TTL %v; want the three key fields only and 1h to Expiration", g.Value, g.Data, g.TTL)
	}
	// Without a session token or an expiry (a long-term key).
	e = newSource(t, exec.Config{}, `echo '{"Version": 1, "AccessKeyId": "AKIDCREDPROXYTEST01", "SecretAccessKey": "sk-test-aws-secret-0123456789"}'`)
	if g := e.acquire(t); len(g.Data) != 2 || g.TTL != 0 {
		t.Errorf("long-term key: data %v TTL %v; want two fields and no expiry", g.Data, g.TTL)
	}
}

// Output that is not a credential fails with fixed text: never a byte of
// what the helper printed.
func TestBadOutputRefused(t *testing.T) {
	const s = "sk-test-bad-0123456789"
	for _, tc := range []struct{ name, body, want string }{
		{"nothing", `exit 0`, "printed nothing"},
		{"blank lines", `printf '\n  \n'`, "printed nothing"},
		{"two lines", `printf '` + s + `\n` + s + `x\n'`, "2 non-empty lines"},
		{"short value", `echo sk-1234`, "too short"},
		{"control character", `printf '` + s + `\033[2J\n'`, "control character"},
		{"not JSON", `echo '{` + s + `'`, "not a JSON object"},
		{"unknown key", `echo '{"value": "` + s + `", "` + s + `": 1}'`, "does not fit"},
		{"no value", `echo '{"fields": {"a": "` + s + `", "b": "` + s + `"}}'`, `no "value"`},
		{"both expiries", `echo '{"value": "` + s + `", "expires_in": 5, "expires_at": "2030-01-01T00:00:00Z"}'`, "both"},
		{"expires_in zero", `echo '{"value": "` + s + `", "expires_in": 0}'`, "expired"},
		{"bad expires_at", `echo '{"value": "` + s + `", "expires_at": "` + s + `"}'`, "not an RFC 3339 time"},
		{"expired Expiration", `echo '{"Version": 1, "AccessKeyId": "AKIDCREDPROXYTEST01", "SecretAccessKey": "` + s + `", "Expiration": "2020-01-01T00:00:00Z"}'`, "expired"},
		{"process without secret", `echo '{"Version": 1, "AccessKeyId": "` + s + `"}'`, "no SecretAccessKey"},
		{"process version 2", `echo '{"Version": 2, "AccessKeyId": "AKIDCREDPROXYTEST01", "SecretAccessKey": "` + s + `"}'`, "Version is 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSource(t, exec.Config{}, tc.body)
			err := e.acquireErr(t)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Acquire: %v; want %q", err, tc.want)
			}
			notIn(t, []string{s, "sk-1234", "AKIDCREDPROXYTEST01"}, map[string]string{"error": err.Error(), "logs": e.logs.String()})
		})
	}
}

// More than MaxOutput on stdout: the helper is killed (it would print
// forever) and the run fails at once.
func TestOversizedOutputRefused(t *testing.T) {
	e := newSource(t, exec.Config{Timeout: time.Minute}, `while :; do echo sk-test-flood-0123456789; done`)
	start := time.Now()
	err := e.acquireErr(t)
	if !strings.Contains(err.Error(), "more than 65536 bytes") || strings.Contains(err.Error(), "sk-test-flood") {
		t.Errorf("Acquire: %v; want an oversized-output error without the output", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Acquire took %v; the flooding helper was not killed when it passed the bound", d)
	}
}

// A hung helper is killed at its timeout with its whole process group: a
// grandchild that holds stdout open does not hold Acquire past the
// timeout, and does not outlive it.
func TestHungHelperKilledAtTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	e := newSource(t, exec.Config{Timeout: 300 * time.Millisecond, Env: map[string]string{"PID_FILE": pidFile}},
		`sleep 600 &
echo $! > "$PID_FILE"
sleep 600`)
	start := time.Now()
	err := e.acquireErr(t)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timeout of 300ms") {
		t.Errorf("Acquire: %v; want a timeout (context.DeadlineExceeded) naming the timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Acquire returned after %v; want about the 300ms timeout (bounded even with the grandchild holding stdout)", d)
	}
	if got := lease.PublicMessage(&lease.SourceError{Err: err}); !strings.Contains(got, "timed out") {
		t.Errorf("PublicMessage %q; want it to say the source timed out", got)
	}
	pid := readPID(t, pidFile)
	testutil.WaitFor(t, func() bool { return gone(pid) }, "the grandchild (pid "+pid+") to be killed")
}

// A helper that exits 0 but leaves a process holding its stdout: its output
// stands, Acquire is held at most about a second, and the leftover dies.
func TestLeftoverGrandchildKilled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	e := newSource(t, exec.Config{Timeout: time.Minute, Env: map[string]string{"PID_FILE": pidFile}},
		`sleep 600 &
echo $! > "$PID_FILE"
echo sk-test-left-0123456789`)
	start := time.Now()
	g := e.acquire(t)
	if g.Value != "sk-test-left-0123456789" {
		t.Errorf("value %q", g.Value)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Acquire took %v; want about a second", d)
	}
	pid := readPID(t, pidFile)
	testutil.WaitFor(t, func() bool { return gone(pid) }, "the leftover grandchild (pid "+pid+") to be killed")
	if !strings.Contains(e.logs.String(), "left a process holding its output") {
		t.Errorf("no warning about the leftover process in the log:\n%s", e.logs.String())
	}
}

// A non-zero exit fails with the status only: not what it printed on
// stdout (even a value) nor stderr, which goes to the log, masked.
func TestNonZeroExit(t *testing.T) {
	const s = "sk-test-exit-0123456789"
	e := newSource(t, exec.Config{}, `echo `+s+`
echo "op: not signed in (session `+s+`)" >&2
exit 3`)
	err := e.acquireErr(t)
	if !strings.HasSuffix(err.Error(), "exec helper: helper exited with status 3") {
		t.Errorf("Acquire: %v; want the exit status only", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "op: not signed in (session [redacted]") {
		t.Errorf("want the stderr line logged with the value masked; logs:\n%s", logs)
	}
	notIn(t, []string{s}, map[string]string{"error": err.Error(), "logs": logs})

	e = newSource(t, exec.Config{}, `kill -TERM $$`)
	if err := e.acquireErr(t); !strings.Contains(err.Error(), "killed by signal terminated") {
		t.Errorf("a helper killed by a signal: %v", err)
	}
}

// A helper that also prints the secret to stderr (raw, base64, inside a
// JSON line) on success: the log gets each stderr line, masked.
func TestSecretOnStderrNeverLogged(t *testing.T) {
	const s = "sk-test-stderr-0123456789"
	b64 := base64.StdEncoding.EncodeToString([]byte(s))
	e := newSource(t, exec.Config{Env: map[string]string{"HELPER_TOKEN": "sk-test-service-token-0123"}}, `
echo "debug: fetched `+s+`" >&2
echo "debug: b64 `+b64+`" >&2
echo '{"token":"`+s+`"}' >&2
echo "debug: my token is $HELPER_TOKEN" >&2
echo '{"value": "`+s+`"}'`)
	g := e.acquire(t)
	if g.Value != s {
		t.Fatalf("value %q", g.Value)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, `"msg":"exec: helper stderr"`); n != 4 {
		t.Errorf("%d stderr records; want one per line (4):\n%s", n, logs)
	}
	if !strings.Contains(logs, "debug: fetched [redacted]") {
		t.Errorf("want the stderr line with the value masked:\n%s", logs)
	}
	notIn(t, []string{s, b64, "sk-test-service-token-0123"}, map[string]string{"logs": logs})
}

// Only PATH and HOME (and the configured env) reach the helper, never the
// proxy's other variables; it runs in the configured directory.
func TestMinimalEnvironment(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_OTHER_KEY", "sk-test-other-0123456789")
	dir := t.TempDir()
	out := filepath.Join(dir, "env.txt")
	e := newSource(t, exec.Config{Dir: dir, Env: map[string]string{"OP_ACCOUNT": "my.1password.com", "OUT": out}},
		`env > "$OUT"; pwd >> "$OUT"; echo sk-test-env-0123456789`)
	e.acquire(t)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	names := map[string]bool{}
	for _, l := range lines[:len(lines)-1] {
		k, _, _ := strings.Cut(l, "=")
		names[k] = true
	}
	// sh itself sets PWD (and some shells SHLVL, _, OLDPWD).
	for k := range names {
		switch k {
		case "PATH", "HOME", "OP_ACCOUNT", "OUT", "PWD", "SHLVL", "_", "OLDPWD":
		default:
			t.Errorf("the helper saw %s", k)
		}
	}
	if !names["PATH"] || !names["OP_ACCOUNT"] {
		t.Errorf("the helper's environment %v lacks PATH or the configured OP_ACCOUNT", names)
	}
	if wd := lines[len(lines)-1]; wd != dir {
		t.Errorf("the helper ran in %s; want %s", wd, dir)
	}
}

// The arguments reach the helper as a list, untouched by any shell.
func TestArgumentsAreNotShellWords(t *testing.T) {
	e := newSource(t, exec.Config{Command: []string{"/bin/sh", "-c", `printf '%s\n' "$1"`, "sh", "sk-test-arg $(id) `id` ;x"}}, "")
	if g := e.acquire(t); g.Value != "sk-test-arg $(id) `id` ;x" {
		t.Errorf("value %q; want the argument verbatim", g.Value)
	}
}

func TestNewRefusesAMissingHelper(t *testing.T) {
	for _, cmd := range [][]string{nil, {""}, {"credproxy-no-such-helper"}, {filepath.Join(t.TempDir(), "none")}} {
		if _, err := exec.New(exec.Config{Name: "x", Command: cmd}); err == nil {
			t.Errorf("New(%q) accepted it", cmd)
		}
	}
}

// A helper that floods stderr: it still succeeds, and the log gets at most
// the first 16 KiB of it, then a note that it was cut.
func TestStderrBounded(t *testing.T) {
	e := newSource(t, exec.Config{}, `i=0
while [ $i -lt 3000 ]; do echo "progress line $i of a chatty helper" >&2; i=$((i+1)); done
echo sk-test-chatty-0123456789`)
	if g := e.acquire(t); g.Value != "sk-test-chatty-0123456789" {
		t.Fatalf("value %q", g.Value)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "exec: helper stderr cut") || strings.Contains(logs, "line 2999 ") {
		t.Errorf("want the stderr cut at its bound and noted; got %d bytes of log", len(logs))
	}
	if n := strings.Count(logs, `"msg":"exec: helper stderr"`); n < 100 || n > 1000 {
		t.Errorf("%d stderr records; want the lines of the first 16 KiB only", n)
	}
}

// A revokeCommand gets the lease's value on stdin, one line; a failing one
// reports its exit status only, and its stderr is logged masked.
func TestRevokeCommand(t *testing.T) {
	const s = "sk-test-revoke-0123456789"
	out := filepath.Join(t.TempDir(), "revoked")
	revoke := script(t, `cat > "$OUT"
if [ -e "$OUT.fail" ]; then echo "cannot revoke $(cat "$OUT")" >&2; exit 4; fi`)
	e := newSource(t, exec.Config{RevokeCommand: []string{revoke}, Env: map[string]string{"OUT": out}}, `echo `+s)
	g := e.acquire(t)
	if err := e.src.Revoke(context.Background(), g); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != s+"\n" {
		t.Errorf("the revoke helper read %q on stdin; want the value and a newline", b)
	}
	os.WriteFile(out+".fail", nil, 0o600)
	err := e.src.Revoke(context.Background(), g)
	var se *lease.SourceError
	if !errors.As(err, &se) || !strings.HasSuffix(err.Error(), "exec helper: revoke helper exited with status 4") {
		t.Errorf("failing Revoke: %v; want a SourceError with the exit status", err)
	}
	if !strings.Contains(e.logs.String(), "cannot revoke [redacted]") {
		t.Errorf("want the revoke helper's stderr logged, masked:\n%s", e.logs.String())
	}
	notIn(t, []string{s}, map[string]string{"error": err.Error(), "logs": e.logs.String()})
	// No revokeCommand: Revoke runs nothing.
	if err := newSource(t, exec.Config{}, `echo `+s).src.Revoke(context.Background(), g); err != nil {
		t.Errorf("Revoke without a revokeCommand: %v", err)
	}
}
