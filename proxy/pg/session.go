package pg

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
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
	agent, up net.Conn
	killOnce  sync.Once
	why       atomic.Pointer[pgError] // set by kill: the FATAL error the agent gets
	fromAgent atomic.Int64
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
	ss := &session{agent: c, up: hj.Conn}
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
	s.obs.ConnClosed(s.db.Name, d, ss.fromAgent.Load(), ss.toAgent.Load())
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
// or kill is called. Agent to upstream is a plain copy. Upstream to agent
// keeps track of message boundaries, so that a connection ended by
// credproxy gets its FATAL ErrorResponse between two whole messages.
func (ss *session) relay(ended <-chan struct{}, why *pgError) {
	done := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		n, _ := io.CopyBuffer(ss.up, ss.agent, make([]byte, relayBuffer))
		ss.fromAgent.Store(n)
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

// toAgentLoop copies upstream messages to the agent, flushing whenever the
// upstream has nothing more buffered.
func (ss *session) toAgentLoop() {
	br := bufio.NewReaderSize(ss.up, relayBuffer)
	bw := bufio.NewWriterSize(ss.agent, relayBuffer)
	var total int64
	defer func() { ss.toAgent.Store(total) }()
	for {
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
		hdr, err := br.Peek(5)
		if err != nil {
			break // upstream closed, or kill: at a message boundary
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 {
			return // not the protocol: stop without a FATAL
		}
		m, err := io.CopyN(bw, br, 1+n)
		total += m
		if err != nil {
			return // mid-message: the agent cannot frame a FATAL any more
		}
	}
	if err := bw.Flush(); err != nil {
		return
	}
	if why := ss.why.Load(); why != nil {
		_ = ss.agent.SetWriteDeadline(time.Now().Add(killWriteTimeout))
		_, _ = ss.agent.Write(why.encode())
	}
}

// kill ends the session with why: the upstream read stops now, and the
// agent gets why once the message it is receiving is whole.
func (ss *session) kill(why *pgError) {
	ss.killOnce.Do(func() {
		ss.why.Store(why)
		_ = ss.up.SetReadDeadline(time.Now())
		_ = ss.agent.SetWriteDeadline(time.Now().Add(killWriteTimeout))
	})
}
