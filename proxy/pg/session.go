package pg

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credproxy/credproxy/lease"
)

// relayBuffer is the size of each direction's buffer.
const relayBuffer = 32 << 10

// killWriteTimeout bounds writing the final FATAL error to a slow agent.
const killWriteTimeout = 5 * time.Second

// session is one agent connection relayed to its upstream backend.
type session struct {
	s         *Server
	agent, up net.Conn
	killOnce  sync.Once
	why       atomic.Pointer[pgError] // set by kill: the FATAL error the agent gets
	fromAgent atomic.Int64            // bytes relayed so far
	toAgent   atomic.Int64
}

// open leases the credential, logs in upstream, greets the agent as the
// upstream's session and relays until either side closes or the lease ends.
func (s *Server) open(c net.Conn, sm *pgproto3.StartupMessage, identity string, start time.Time) {
	params, pe := runtimeParams(sm)
	if pe != nil {
		s.refuse(c, pe)
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(s.o.StartupTimeout))
	defer cancel()
	ticket, hold, err := s.creds.GetHeld(ctx, s.db.Credential, identity, s.use)
	if err != nil {
		s.log.Warn("pg: no lease for the connection", "identity", identity, "credential", s.db.Credential, "error", err)
		s.refuse(c, leaseError(s.db.Name, err))
		return
	}
	defer hold.Release()
	user, pass := login(ticket, s.db.Upstream.User)
	if user == "" {
		s.refuse(c, &pgError{codeCannotConnect, fmt.Sprintf(
			"credproxy: database %q: credential %q has no username field and upstream.user is not set", s.db.Name, s.db.Credential)})
		return
	}
	hj, err := s.connect(ctx, user, pass, params)
	if err != nil {
		s.refuse(c, s.upstreamError(err, ticket, pass))
		return
	}
	ss := &session{s: s, agent: c, up: hj.Conn}
	pid, secret, ok := s.register(ss, hj)
	if !ok {
		hj.Conn.Close()
		s.refuse(c, errShutdown)
		return
	}
	defer s.unregister(pid)
	if err := greet(c, hj, pid, secret); err != nil {
		hj.Conn.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	attrs := []any{"identity", identity, "credential", s.db.Credential, "lease_id", ticket.LeaseID, "purpose", s.db.Purpose}
	s.log.Info("pg: connection opened", attrs...)
	s.obs.ConnOpened(s.db.Name)
	opened := time.Now()
	ss.relay(hold.Ended(), s.leaseEnded())
	d := time.Since(opened)
	s.obs.ConnClosed(s.db.Name, d)
	s.log.Info("pg: connection closed", append(attrs, "duration", d, "bytes_from_agent", ss.fromAgent.Load(),
		"bytes_to_agent", ss.toAgent.Load(), "terminated", ss.why.Load() != nil)...)
}

// leaseError is the agent's error when no lease could be had. The text is
// lease.PublicMessage's: the credential's name and what failed, no store text.
func leaseError(db string, err error) *pgError {
	return &pgError{codeCannotConnect, fmt.Sprintf("credproxy: database %q: %s", db, lease.PublicMessage(err))}
}

// leaseEnded is the FATAL error of a connection whose lease ended.
func (s *Server) leaseEnded() *pgError {
	return &pgError{codeAdminShutdown, fmt.Sprintf(
		"credproxy: terminating connection: the lease of credential %q for database %q has expired or was revoked; reconnect to log in with a new lease",
		s.db.Credential, s.db.Name)}
}

// register makes ss killable by Close and gives it a cancel key.
func (s *Server) register(ss *session, hj *pgconn.HijackedConn) (pid, secret uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, 0, false
	}
	pid, secret = s.newKeyLocked()
	s.keys[pid] = cancelKey{secret: secret, addr: hj.Conn.RemoteAddr().String(), pid: hj.PID, upSecret: hj.SecretKey}
	s.conns[ss.agent] = ss
	return pid, secret, true
}

func (s *Server) unregister(pid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, pid)
}

// forget drops c from the connections Close ends.
func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// greet tells the agent what libpq expects after a login: AuthenticationOk,
// the upstream's parameters, credproxy's own cancel key (the upstream's
// never leaves credproxy) and ReadyForQuery.
func greet(c net.Conn, hj *pgconn.HijackedConn, pid, secret uint32) error {
	be := pgproto3.NewBackend(nil, c)
	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range hj.ParameterStatuses {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: hj.TxStatus})
	return be.Flush()
}

// relay copies bytes both ways until a side closes, the lease ends (ended)
// or kill is called. Each direction is one read and one write per chunk
// (no per-message copies or syscalls). Upstream to agent also follows
// message boundaries, so that a connection ended by credproxy gets its FATAL
// ErrorResponse between two whole messages.
func (ss *session) relay(ended <-chan struct{}, why *pgError) {
	done := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, relayBuffer)
		for {
			n, err := ss.agent.Read(buf)
			if n > 0 {
				if _, werr := ss.up.Write(buf[:n]); werr != nil {
					break
				}
				ss.fromAgent.Add(int64(n))
				ss.s.fromAgent(n)
			}
			if err != nil {
				break
			}
		}
		ss.up.Close()
	}()
	go func() {
		select {
		case <-ended:
			ss.kill(why)
		case <-done:
		}
	}()
	ss.toAgentLoop()
	close(done)
	ss.agent.Close()
	<-copied
}

// toAgentLoop copies the upstream's bytes to the agent as they come and,
// once the upstream read stops (closed, or kill), sends the kill's FATAL
// error if the agent has received whole messages only.
func (ss *session) toAgentLoop() {
	buf := make([]byte, relayBuffer)
	var fr framer
	for {
		n, err := ss.up.Read(buf)
		if n > 0 {
			if !fr.scan(buf[:n]) {
				return // not the protocol: stop without a FATAL
			}
			if _, werr := ss.agent.Write(buf[:n]); werr != nil {
				return
			}
			ss.toAgent.Add(int64(n))
			ss.s.toAgent(n)
		}
		if err != nil {
			break
		}
	}
	if why := ss.why.Load(); why != nil && fr.boundary() {
		_ = ss.agent.SetWriteDeadline(time.Now().Add(killWriteTimeout))
		_, _ = ss.agent.Write(why.encode())
	}
}

// framer follows backend message boundaries in a byte stream: a type byte,
// a 4-byte length (itself included), then the body.
type framer struct {
	hdr  [5]byte
	hlen int   // header bytes seen of the current message
	left int64 // body bytes still to come
}

// scan advances over b; false when a length is impossible.
func (f *framer) scan(b []byte) bool {
	for len(b) > 0 {
		if f.left > 0 {
			k := min(f.left, int64(len(b)))
			f.left -= k
			b = b[k:]
			continue
		}
		k := copy(f.hdr[f.hlen:], b)
		f.hlen += k
		b = b[k:]
		if f.hlen == len(f.hdr) {
			n := int64(binary.BigEndian.Uint32(f.hdr[1:]))
			if n < 4 {
				return false
			}
			f.left, f.hlen = n-4, 0
		}
	}
	return true
}

// boundary reports whether the bytes scanned end with a whole message.
func (f *framer) boundary() bool { return f.hlen == 0 && f.left == 0 }

// kill ends the session with why: the upstream read stops now, and the
// agent gets why once the message it is receiving is whole.
func (ss *session) kill(why *pgError) {
	ss.killOnce.Do(func() {
		ss.why.Store(why)
		_ = ss.up.SetReadDeadline(time.Now())
		_ = ss.agent.SetWriteDeadline(time.Now().Add(killWriteTimeout))
	})
}
