package pg

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH. A longer
// startup packet or password message (a hostile length such as 2^31) is
// refused before anything is allocated for it.
const maxStartupPacket = 10000

var errBadPacket = errors.New("invalid startup packet")

// handle serves one agent connection from accept to close.
func (s *Server) handle(c net.Conn) {
	start := time.Now()
	defer closeGently(c)
	defer s.forget(c)
	// A startup that never finishes is dropped: the deadline covers every
	// read and write until the relay starts.
	_ = c.SetDeadline(start.Add(s.o.StartupTimeout))
	sm, err := s.readStartup(c)
	if err != nil {
		s.log.Debug("pg: startup failed", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	if sm == nil {
		return // a cancel request, forwarded
	}
	identity, pe := s.identify(c, sm)
	if pe != nil {
		s.refuse(c, pe)
		s.log.Info("pg: connection refused", "identity", identity, "credential", s.db.Credential, "code", pe.code, "reason", pe.msg)
		return
	}
	s.open(c, sm, identity, start)
}

// closeGently closes c so that an error just written still reaches the
// agent: closing a socket with unread input sends a reset, which can discard
// the error before the agent reads it. Half-close, then drain a bounded
// amount for a bounded time.
func closeGently(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok && tc.CloseWrite() == nil {
		_ = tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.CopyN(io.Discard, tc, 64<<10)
	}
	c.Close()
}

// readStartup reads startup packets until the StartupMessage. SSLRequest and
// GSSENCRequest are answered 'N': the local listener speaks neither, and a
// client that insists on one gives up cleanly. A CancelRequest is forwarded
// and returns a nil message.
func (s *Server) readStartup(c net.Conn) (*pgproto3.StartupMessage, error) {
	for range 3 {
		msg, err := readStartupPacket(c)
		if err != nil {
			if errors.Is(err, errBadPacket) {
				s.refuse(c, &pgError{codeProtocolViolation, "credproxy: " + err.Error()})
			}
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case *pgproto3.CancelRequest:
			s.forwardCancel(m)
			return nil, nil
		case *pgproto3.StartupMessage:
			return m, nil
		}
	}
	err := fmt.Errorf("%w: no StartupMessage after 3 packets", errBadPacket)
	s.refuse(c, &pgError{codeProtocolViolation, "credproxy: " + err.Error()})
	return nil, err
}

// readStartupPacket reads exactly one packet (never more: bytes the agent
// sends after its startup belong to the upstream) and decodes it with
// pgproto3.
func readStartupPacket(r io.Reader) (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartupPacket {
		return nil, fmt.Errorf("%w: length %d (want 8 to %d)", errBadPacket, n, maxStartupPacket)
	}
	pkt := make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		return nil, err
	}
	msg, err := pgproto3.NewBackend(bytes.NewReader(pkt), io.Discard).ReceiveStartupMessage()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPacket, err)
	}
	return msg, nil
}

// identify returns the agent's identity: the fixed one, or with
// Authenticate set, the client whose name and token the agent sent as user
// and password. A database restricted to identities refuses the others.
func (s *Server) identify(c net.Conn, sm *pgproto3.StartupMessage) (string, *pgError) {
	identity := s.o.Identity
	if s.o.Authenticate != nil {
		pass, err := askPassword(c)
		if err != nil {
			return "", &pgError{codeProtocolViolation, "credproxy: " + err.Error()}
		}
		user := sm.Parameters["user"]
		name, ok := s.o.Authenticate(user, pass)
		if !ok {
			return user, &pgError{codeInvalidPassword, fmt.Sprintf(
				"credproxy: password authentication failed for client %q: log in with your client name as the user and its token as the password", user)}
		}
		identity = name
	}
	if len(s.db.Identities) > 0 && !slices.Contains(s.db.Identities, identity) {
		return identity, &pgError{codeInvalidAuthorization, fmt.Sprintf(
			"credproxy: identity %q may not use database %q", identity, s.db.Name)}
	}
	return identity, nil
}

// askPassword asks the agent for a cleartext password: the local listener
// is plain TCP, like the proxy's Proxy-Authorization.
func askPassword(c net.Conn) (string, error) {
	be := pgproto3.NewBackend(nil, c)
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return "", err
	}
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if hdr[0] != 'p' || n < 4 || n > maxStartupPacket {
		return "", fmt.Errorf("want a password message of at most %d bytes", maxStartupPacket)
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(c, msg[5:]); err != nil {
		return "", err
	}
	rb := pgproto3.NewBackend(bytes.NewReader(msg), io.Discard)
	if err := rb.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return "", err
	}
	m, err := rb.Receive()
	if err != nil {
		return "", err
	}
	pm, ok := m.(*pgproto3.PasswordMessage)
	if !ok {
		return "", fmt.Errorf("want a password message, got %T", m)
	}
	return pm.Password, nil
}

// cancelKey maps the cancel key an agent was given to its upstream backend.
type cancelKey struct {
	secret   uint32 // the agent's
	addr     string // the upstream server's address
	pid      uint32 // the upstream backend's
	upSecret uint32
}

// newKeyLocked picks an unused process id and a secret for an agent.
func (s *Server) newKeyLocked() (pid, secret uint32) {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		pid, secret = binary.BigEndian.Uint32(b[:4])&0x7fffffff, binary.BigEndian.Uint32(b[4:])
		if _, used := s.keys[pid]; !used && pid != 0 {
			return pid, secret
		}
	}
}

// forwardCancel sends the upstream backend's own cancel key to its server,
// as libpq does (a new plain connection), if the agent's key is one this
// server gave out. A wrong key is dropped silently, as PostgreSQL does.
func (s *Server) forwardCancel(m *pgproto3.CancelRequest) {
	s.mu.Lock()
	k, ok := s.keys[m.ProcessID]
	s.mu.Unlock()
	if !ok || subtle.ConstantTimeEq(int32(k.secret), int32(m.SecretKey)) != 1 {
		s.log.Debug("pg: cancel request with an unknown key dropped")
		return
	}
	pkt, err := (&pgproto3.CancelRequest{ProcessID: k.pid, SecretKey: k.upSecret}).Encode(nil)
	if err != nil {
		return
	}
	d := net.Dialer{Timeout: s.o.DialTimeout}
	up, err := d.Dial("tcp", k.addr)
	if err != nil {
		s.log.Warn("pg: cannot forward a cancel request", "upstream", k.addr, "error", err)
		return
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(s.o.DialTimeout))
	if _, err := up.Write(pkt); err != nil {
		s.log.Warn("pg: cannot forward a cancel request", "upstream", k.addr, "error", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(up, 1<<10)) // the server closes it when done
	s.log.Debug("pg: cancel request forwarded", "upstream", k.addr)
}
