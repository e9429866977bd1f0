package pg

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/rules"
)

// baseConfig is the upstream connection every login starts from: host,
// port, database and TLS from the config, nothing from PG* environment
// variables that would change where or how credproxy connects.
func baseConfig(u rules.DBUpstream, dialTimeout time.Duration) (*pgconn.Config, error) {
	q := url.Values{"sslmode": {"disable"}, "connect_timeout": {strconv.Itoa(max(1, int(dialTimeout/time.Second)))}}
	raw := (&url.URL{Scheme: "postgres", Host: u.Addr(), Path: "/" + u.Database, RawQuery: q.Encode()}).String()
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("pg: upstream %s: %w", u.Addr(), err)
	}
	cfg.Fallbacks = nil // never retry without TLS
	cfg.ValidateConnect, cfg.AfterConnect = nil, nil
	cfg.KerberosSrvName, cfg.KerberosSpn = "", ""
	cfg.RuntimeParams = map[string]string{}
	if cfg.TLSConfig, err = tlsConfig(u); err != nil {
		return nil, err
	}
	return cfg, nil
}

// tlsConfig follows libpq's sslmode, except that upstream TLS is always
// verified, chain and host name, by crypto/tls itself: verify-full trusts
// the system roots plus caFile; require trusts caFile alone (rules refuses a
// require without one), so a private CA's server needs no public root.
func tlsConfig(u rules.DBUpstream) (*tls.Config, error) {
	if u.SSLMode == rules.SSLDisable {
		return nil, nil
	}
	var roots *x509.CertPool
	switch u.SSLMode {
	case rules.SSLVerifyFull:
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
	case rules.SSLRequire:
		if u.CAFile == "" {
			return nil, fmt.Errorf("pg: sslmode require needs caFile: the server is verified against it")
		}
		roots = x509.NewCertPool()
	default:
		return nil, fmt.Errorf("pg: sslmode %q: want disable, require or verify-full", u.SSLMode)
	}
	if u.CAFile != "" {
		pem, err := os.ReadFile(u.CAFile)
		if err != nil {
			return nil, fmt.Errorf("pg: upstream caFile: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pg: upstream caFile %s: no PEM certificate", u.CAFile)
		}
	}
	return &tls.Config{ServerName: u.Host, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// runtimeParams are the agent's startup parameters passed upstream: all but
// user and database, which the config decides, and protocol extensions.
func runtimeParams(sm *pgproto3.StartupMessage) (map[string]string, *pgError) {
	out := make(map[string]string, len(sm.Parameters))
	for k, v := range sm.Parameters {
		switch {
		case k == "user" || k == "database" || strings.HasPrefix(k, "_pq_."):
		case k == "replication":
			switch strings.ToLower(v) {
			case "false", "off", "no", "0":
			default:
				return nil, &pgError{codeNotSupported, "credproxy: replication connections are not supported"}
			}
		default:
			out[k] = v
		}
	}
	return out, nil
}

// login is the user name and password in a ticket: the lease's username and
// password fields (Vault's database engine, a KV pair), else the configured
// user and the value.
func login(t lease.Ticket, user string) (string, string) {
	if u := t.Data["username"]; u != "" {
		user = u
	}
	pass := t.Data["password"]
	if pass == "" {
		pass = t.Value
	}
	return user, pass
}

// connect logs in upstream and takes the raw connection over once the
// server is ready for a query.
func (s *Server) connect(ctx context.Context, user, pass string, params map[string]string) (*pgconn.HijackedConn, error) {
	cfg := s.base.Copy()
	cfg.User, cfg.Password, cfg.RuntimeParams = user, pass, params
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	return pc.Hijack()
}

// upstreamError turns a failed upstream login into the agent's error and
// logs the cause with the login's values masked. A refused login (SQLSTATE
// class 28) counts as an auth failure and marks the lease bad.
func (s *Server) upstreamError(err error, t lease.Ticket, pass string) *pgError {
	cause := secret.NewScrubber(pass, t.Value).String(err.Error())
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "28"):
		s.obs.AuthFailed(s.db.Name)
		s.creds.Unauthorized(t, s.use)
		s.log.Warn("pg: upstream refused the leased login", "credential", s.db.Credential, "lease_id", t.LeaseID, "code", pe.Code, "error", cause)
		return &pgError{codeInvalidAuthorization, fmt.Sprintf(
			"credproxy: database %q: the upstream server refused the login of credential %q", s.db.Name, s.db.Credential)}
	case errors.As(err, &pe):
		s.log.Warn("pg: upstream refused the connection", "credential", s.db.Credential, "code", pe.Code, "error", cause)
		return &pgError{pe.Code, fmt.Sprintf(
			"credproxy: database %q: the upstream server refused the connection (SQLSTATE %s) with credential %q", s.db.Name, pe.Code, s.db.Credential)}
	}
	s.log.Warn("pg: cannot connect upstream", "credential", s.db.Credential, "upstream", s.db.Upstream.Addr(), "error", cause)
	return &pgError{codeCannotConnect, fmt.Sprintf(
		"credproxy: database %q: cannot connect to the upstream server %s with credential %q", s.db.Name, s.db.Upstream.Addr(), s.db.Credential)}
}
