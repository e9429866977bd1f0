package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
	"github.com/credproxy/credproxy/proxy/pg"
	"github.com/credproxy/credproxy/rules"
)

// startDatabases starts one PostgreSQL listener per `databases:` entry. The
// stop function it returns ends their connections (each agent gets a FATAL
// error) and must run before the lease manager revokes the leases.
func startDatabases(cfg *rules.Config, mgr *lease.Manager, m *metrics.Metrics, log *slog.Logger) (stop func(context.Context) error, err error) {
	var servers []*pg.Server
	stop = func(ctx context.Context) error {
		var errs []error
		for _, s := range servers {
			if err := s.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if len(cfg.Databases) == 0 {
		return stop, nil
	}
	obs := metrics.NewDatabases(m)
	var auth func(user, pass string) (string, bool)
	if cfg.RequiresAuth() {
		auth = cfg.Authenticate
	}
	for _, db := range cfg.Databases {
		s, err := pg.New(pg.Options{Database: db, Credentials: mgr, Identity: cfg.Identity, Authenticate: auth,
			Observer: obs, Logger: log, MaxConnections: cfg.Limits.MaxConnections})
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", db.Listen); err == nil {
				servers = append(servers, s)
				go func() {
					if err := s.Serve(ln); !errors.Is(err, pg.ErrServerClosed) {
						log.Error("database listener stopped", "database", db.Name, "err", err)
					}
				}()
				log.Info("database listener started", "database", db.Name, "listen", ln.Addr().String(),
					"upstream", db.Upstream.Addr(), "credential", db.Credential)
				continue
			}
		}
		return nil, errors.Join(fmt.Errorf("databases: %s: %w", db.Name, err), stop(context.Background()))
	}
	return stop, nil
}

// printDatabases lists the databases: entries for `credproxy check`.
func printDatabases(w io.Writer, cfg *rules.Config) {
	for _, d := range cfg.Databases {
		fmt.Fprintf(w, "  database %-12s listen=%s upstream=%s/%s sslmode=%s credential=%s\n",
			d.Name, d.Listen, d.Upstream.Addr(), d.Upstream.Database, d.Upstream.SSLMode, d.Credential)
	}
}
