// Package pg is credproxy's PostgreSQL listener: one Server per `databases:`
// entry. Agents connect without a password; the Server logs in upstream with
// a lease of the database's credential (pgconn does the TLS and the SCRAM,
// MD5 or cleartext exchange), replays the session's parameters to the agent
// under a cancel key of its own, then relays bytes both ways. It never parses
// the config file or talks to a secret store: rules and lease do.
package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/rules"
)

// Credentials is what a Server needs of the lease manager.
type Credentials interface {
	// GetHeld returns a ticket and a hold on its lease for one connection.
	GetHeld(ctx context.Context, credential, identity string, u lease.Use) (lease.Ticket, *lease.Hold, error)
	// Unauthorized reports that the upstream refused the ticket's login.
	Unauthorized(t lease.Ticket, u lease.Use)
}

// Observer receives a Server's measurements; metrics.Databases implements it.
type Observer interface {
	ConnOpened(database string)
	ConnClosed(database string, d time.Duration)
	AuthFailed(database string) // the upstream refused the leased login
	// Relayed returns the functions the relay calls with every chunk of
	// bytes it passes on, so that long sessions are counted as they go.
	// A Server calls it once.
	Relayed(database string) (fromAgent, toAgent func(n int))
}

type nopObserver struct{}

func (nopObserver) ConnOpened(string)                     {}
func (nopObserver) ConnClosed(string, time.Duration)      {}
func (nopObserver) AuthFailed(string)                     {}
func (nopObserver) Relayed(string) (func(int), func(int)) { return nop, nop }
func nop(int)                                             {}

// Options configure a Server. Database and Credentials are required.
type Options struct {
	Database    *rules.Database
	Credentials Credentials
	// Identity is every agent's identity when Authenticate is nil (a
	// sidecar's fixed identity).
	Identity string
	// Authenticate, when set, makes agents log in with their client name as
	// the user and its token as the password (rules.Config.Authenticate).
	Authenticate func(user, pass string) (string, bool)
	Observer     Observer     // nil = none
	Logger       *slog.Logger // nil = slog.Default()
	// StartupTimeout bounds an agent's startup, from accept to the upstream
	// login (default 15s): a client that never finishes is dropped.
	StartupTimeout time.Duration
	// DialTimeout bounds the upstream connect and login (default 10s).
	DialTimeout time.Duration
	// MaxConnections bounds the agent connections held at once, starting up
	// or relayed (0: no bound); more are refused with SQLSTATE 53300.
	MaxConnections int
}

// Server serves one database's listener. Close stops it.
type Server struct {
	db    *rules.Database
	creds Credentials
	o     Options
	obs   Observer
	// relayed counts bytes each way as they are relayed (Observer.Relayed).
	fromAgent, toAgent func(n int)
	log                *slog.Logger
	base               *pgconn.Config // the upstream connection without user and password
	use                lease.Use

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]*session // open agent connections; nil until relayed
	keys   map[uint32]cancelKey  // by the process id the agent was given
	wg     sync.WaitGroup
}

// New builds a Server for o.Database; it reads the upstream's caFile.
func New(o Options) (*Server, error) {
	if o.Database == nil || o.Credentials == nil {
		return nil, errors.New("pg: Options.Database and Options.Credentials are required")
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StartupTimeout <= 0 {
		o.StartupTimeout = 15 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	base, err := baseConfig(o.Database.Upstream, o.DialTimeout)
	if err != nil {
		return nil, err
	}
	fromAgent, toAgent := o.Observer.Relayed(o.Database.Name)
	return &Server{
		db: o.Database, creds: o.Credentials, o: o, obs: o.Observer, fromAgent: fromAgent, toAgent: toAgent,
		log:  o.Logger.With("database", o.Database.Name),
		base: base, use: lease.Use{Rule: o.Database.Name, Purpose: o.Database.Purpose},
		lns: map[net.Listener]struct{}{}, conns: map[net.Conn]*session{}, keys: map[uint32]cancelKey{},
	}, nil
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("pg: server closed")

// Serve accepts agent connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: back off and retry, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("pg: accept failed; retrying", "error", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		switch s.track(c) {
		case errClosed:
			c.Close()
			return ErrServerClosed
		case errFull:
			go s.refuseFull(c)
			continue
		}
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

var (
	errClosed = errors.New("closed")
	errFull   = errors.New("full")
)

// track registers a new connection unless the server is closed or full.
func (s *Server) track(c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errClosed
	case s.o.MaxConnections > 0 && len(s.conns) >= s.o.MaxConnections:
		return errFull
	}
	s.conns[c] = nil
	s.wg.Add(1)
	return nil
}

// refuseFull tells an agent over the connection limit so, briefly.
func (s *Server) refuseFull(c net.Conn) {
	s.log.Warn("pg: connection refused: limit reached", "limit", s.o.MaxConnections)
	_ = c.SetDeadline(time.Now().Add(time.Second))
	s.refuse(c, &pgError{codeTooManyConnections, fmt.Sprintf(
		"credproxy: too many connections to database %q (at most %d)", s.db.Name, s.o.MaxConnections)})
	c.Close()
}

// Close stops accepting, ends every open connection with a FATAL error
// (credproxy is shutting down) and waits for them, at most until ctx is
// done. Call it before the lease manager revokes its leases.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	var relayed []*session
	for c, ss := range s.conns {
		if ss == nil {
			c.Close() // still starting up: nothing to say yet
		} else {
			relayed = append(relayed, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range relayed {
		ss.kill(errShutdown)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connections is the number of relayed connections open now.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.conns {
		if ss != nil {
			n++
		}
	}
	return n
}
