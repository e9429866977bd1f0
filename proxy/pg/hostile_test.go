package pg_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/proxy/pg"
)

// newBareHarness has no Vault: credential reports-db comes from a test
// source whose logins PostgreSQL refuses. For tests of the agent side.
func newBareHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clock: leasetest.NewClock(t0), audit: &testutil.SyncBuffer{}, logs: &testutil.SyncBuffer{}, obs: &observer{}}
	h.mgr = lease.NewManager([]lease.Credential{{Name: "reports-db", SourceName: "test", Source: leasetest.NewSource(), Policy: policy}},
		lease.Options{Clock: h.clock, Audit: lease.NewAuditor(h.audit), Logger: h.logger()})
	t.Cleanup(func() { _ = h.mgr.Shutdown(context.Background()) })
	return h
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readAll reads what the server says until it closes the connection.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		t.Fatalf("want the server to close the connection, got %v after %q", err, b)
	}
	return b
}

func wantErrorResponse(t *testing.T, b []byte, code string) {
	t.Helper()
	fe := pgproto3.NewFrontend(bytes.NewReader(b), io.Discard)
	msg, err := fe.Receive()
	er, ok := msg.(*pgproto3.ErrorResponse)
	if err != nil || !ok || er.Code != code || er.Severity != "FATAL" {
		t.Fatalf("server said %q (%T, %v); want a FATAL ErrorResponse %s", b, msg, err, code)
	}
}

func startupLength(n uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	return binary.BigEndian.AppendUint32(b, pgproto3.ProtocolVersionNumber)
}

// Hostile clients: oversized startup packets (10 001 bytes, 2^31) are refused
// before any allocation; a startup that never finishes is dropped at the
// startup timeout; bad cancel keys and unknown protocol versions are
// refused; through all of it the listener keeps serving.
func TestHostileClients(t *testing.T) {
	h := newBareHarness(t)
	addr, srv := h.serve(database(t, "reports", "reports-db"), func(o *pg.Options) { o.StartupTimeout = 300 * time.Millisecond })

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, n := range []uint32{10001, 1 << 31, 0xffffffff, 3} {
		c := dial(t, addr)
		_, _ = c.Write(startupLength(n))
		wantErrorResponse(t, readAll(t, c), "08P01")
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<20 {
		t.Fatalf("hostile startup lengths allocated %d bytes", grown)
	}

	// Protocol 3.2 and 2.0 are not spoken.
	for _, v := range []uint32{196610, 131072} {
		c := dial(t, addr)
		pkt := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 9), v)
		_, _ = c.Write(append(pkt, 0))
		wantErrorResponse(t, readAll(t, c), "08P01")
	}

	// SSLRequest and GSSENCRequest are answered 'N', then a startup goes on.
	c := dial(t, addr)
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{}} {
		pkt, _ := m.Encode(nil)
		_, _ = c.Write(pkt)
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil || one[0] != 'N' {
			t.Fatalf("answer to %T: %q, %v; want 'N'", m, one, err)
		}
	}

	// Startups that never finish: dropped at the startup timeout.
	start := time.Now()
	var slow []net.Conn
	for range 20 {
		c := dial(t, addr)
		_, _ = c.Write(startupLength(100)[:6]) // half a startup, then nothing
		slow = append(slow, c)
	}
	for _, c := range slow {
		readAll(t, c)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("slow startups closed after %v, want about the 300ms timeout", d)
	}

	// A cancel request with a key never given out is dropped.
	c = dial(t, addr)
	pkt, _ := (&pgproto3.CancelRequest{ProcessID: 1234, SecretKey: 5678}).Encode(nil)
	_, _ = c.Write(pkt)
	if b := readAll(t, c); len(b) != 0 {
		t.Fatalf("answer to a bad cancel request: %q, want none", b)
	}

	// Still serving: a real startup reaches the upstream login (which the
	// test source's user fails: 28000 naming the credential).
	pe := connectErr(t, addr)
	if pe.Code != "28000" || !strings.Contains(pe.Message, `credential "reports-db"`) {
		t.Fatalf("after the hostile clients: %s %q", pe.Code, pe.Message)
	}
	if n := srv.Connections(); n != 0 {
		t.Fatalf("%d relayed connections, want 0", n)
	}
}

// A relayed agent that sends garbage (a message claiming 2^31 bytes) is
// the upstream's to refuse; the listener survives and serves the next.
func TestHostileAfterStartup(t *testing.T) {
	h := newHarness(t, policy)
	addr, srv := h.serve(database(t, "reports", "reports-db"))
	c := connect(t, addr)
	raw := c.PgConn().Conn()
	_, _ = raw.Write([]byte{'Q', 0x80, 0, 0, 0, 'x'})
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, raw) // PostgreSQL answers FATAL and closes
	testutil.WaitFor(t, func() bool { return srv.Connections() == 0 }, "the relayed connection to close")
	if u := currentUser(t, connect(t, addr)); !strings.HasPrefix(u, h.prefix) {
		t.Fatalf("next connection: %q", u)
	}
}

// With client logins, a password message claiming 2^31 bytes is refused
// unread, and a wrong token gets 28P01 without a lease being taken.
func TestHostilePasswordMessage(t *testing.T) {
	h := newBareHarness(t)
	auth := func(user, pass string) (string, bool) { return user, pass == "sk-test-client-token-0123" }
	addr, _ := h.serve(database(t, "reports", "reports-db"), func(o *pg.Options) { o.Authenticate = auth })
	startup, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "agent-a"}}).Encode(nil)

	c := dial(t, addr)
	_, _ = c.Write(startup)
	fe := pgproto3.NewFrontend(c, io.Discard)
	if msg, err := fe.Receive(); err != nil {
		t.Fatalf("want a password request: %v", err)
	} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("want AuthenticationCleartextPassword, got %T", msg)
	}
	_, _ = c.Write([]byte{'p', 0x80, 0, 0, 0})
	wantErrorResponse(t, readAll(t, c), "08P01")

	c = dial(t, addr)
	_, _ = c.Write(startup)
	fe = pgproto3.NewFrontend(c, io.Discard)
	_, _ = fe.Receive()
	pw, _ := (&pgproto3.PasswordMessage{Password: "sk-test-wrong-token"}).Encode(nil)
	_, _ = c.Write(pw)
	wantErrorResponse(t, readAll(t, c), "28P01")
	if n := len(h.mgr.List()); n != 0 {
		t.Fatalf("%d leases taken for refused agents, want 0", n)
	}
}

// Over MaxConnections (counting startups), an agent is refused with 53300.
func TestConnectionLimit(t *testing.T) {
	h := newBareHarness(t)
	addr, _ := h.serve(database(t, "reports", "reports-db"), func(o *pg.Options) { o.MaxConnections = 2 })
	held := []net.Conn{dial(t, addr), dial(t, addr)}
	for _, c := range held { // each sends half a startup: both count until the timeout
		_, _ = c.Write(startupLength(100)[:4])
	}
	var b []byte
	for range 50 { // the two may not be accepted yet
		b = readAll(t, dial(t, addr))
		if len(b) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantErrorResponse(t, b, "53300")
	for _, c := range held {
		c.Close()
	}
}
