package pg_test

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/credproxy/credproxy/internal/testutil"
)

// psql with no password, asking for TLS first (sslmode=prefer: the listener
// answers 'N'), runs a script with COPY in and out and a transaction.
func TestPsqlThroughListener(t *testing.T) {
	h := newHarness(t, policy)
	addr, _ := h.serve(database(t, "reports", "reports-db"))
	script := `SELECT current_user;
CREATE TEMP TABLE t (id int, name text);
COPY t FROM STDIN;
1	one
2	two
\.
BEGIN;
INSERT INTO t VALUES (3, 'three');
COMMIT;
COPY t TO STDOUT;
SELECT count(*) FROM generate_series(1, 100000);
`
	out, err := psql(t, addr, script, "-f", "-")
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"1\tone", "2\ttwo", "3\tthree", "100000"}
	if len(lines) != 5 || !strings.HasPrefix(lines[0], h.prefix) || strings.Join(lines[1:], "|") != strings.Join(want, "|") {
		t.Fatalf("psql output:\n%s\nwant the role %s*, then %q", out, h.prefix, want)
	}
}

// psql's Ctrl-C: SIGINT makes psql send a CancelRequest to the listener,
// which forwards it; the statement ends with "canceling statement".
func TestPsqlCancel(t *testing.T) {
	h := newHarness(t, policy)
	addr, _ := h.serve(database(t, "reports", "reports-db"))
	a := admin(t)
	host, port := splitAddr(addr)
	cmd := exec.Command("psql", "-X", "-w", "-d", "host="+host+" port="+port+" user=agent dbname=x sslmode=disable",
		"-c", "SELECT pg_sleep(60)")
	cmd.Env = psqlEnv(t)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	testutil.WaitFor(t, func() bool { return sleeping(t, a, h.prefix) }, "psql's pg_sleep to start")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err == nil || !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Fatalf("psql after SIGINT: %v\n%s\nwant the statement cancelled", err, out.String())
	}
}
