package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/credproxy/credproxy/internal/admin"
	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// shutdownBudget bounds each shutdown phase: draining requests, then
// revoking every lease.
const shutdownBudget = 10 * time.Second

// metrics observes the lease manager without importing it.
var _ lease.Observer = (*metrics.Metrics)(nil)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("run", stderr)
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pprof := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin listener")
	watch := fs.Bool("watch-config", false, "reload the config when its file changes (SIGHUP always reloads)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "credproxy:", err)
		return 2
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := serve(ctx, cfg, serveOptions{Log: log, AuditOut: stdout, Banner: stderr, Pprof: *pprof,
		ReloadOnSIGHUP: true, WatchConfig: *watch}); err != nil {
		log.Error("credproxy stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

type serveOptions struct {
	Log      *slog.Logger
	AuditOut io.Writer // audit lines when the config names no file
	Banner   io.Writer // where the "export HTTPS_PROXY=…" lines go; nil for none
	Pprof    bool
	// Ready, when set, receives the bound proxy and admin addresses.
	Ready func(proxyAddr, adminAddr string)
	Clock lease.Clock // the lease manager's clock; nil = real time (tests pass a fake)
	// ReloadOnSIGHUP reloads the config on SIGHUP; WatchConfig when its
	// file changes (reload.go).
	ReloadOnSIGHUP bool
	WatchConfig    bool
	// Reloader, when set, receives the Reloader once serving, for tests.
	Reloader func(*Reloader)
}

// serve runs credproxy until ctx is done, then stops accepting, drains
// in-flight requests and revokes every held lease, each phase bounded.
func serve(ctx context.Context, cfg *rules.Config, o serveOptions) error {
	log := o.Log
	adminToken, err := cfg.AdminToken() // "" without admin.tokenFile: the control routes answer 403
	if err != nil {
		return fmt.Errorf("admin.tokenFile: %w", err)
	}
	ca, created, err := proxy.LoadOrCreateCA(cfg.CA.Cert, cfg.CA.Key)
	if err != nil {
		return err
	}
	if created {
		log.Info("created a new CA", "cert", cfg.CA.Cert, "key", cfg.CA.Key)
	}
	auditW, closeAudit, err := openAudit(cfg, o.AuditOut)
	if err != nil {
		return err
	}
	defer closeAudit()
	m := metrics.New()
	rl, err := newReloader(cfg, log, o.Clock, m)
	if err != nil {
		return err
	}
	defer rl.closeSources()
	mgr := lease.NewManager(rl.credentials(), lease.Options{Clock: o.Clock, Audit: lease.NewAuditor(auditW), Logger: log, Observer: m,
		MaxTaskTTL: cfg.Leases.MaxTTL})
	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen %s: %w", cfg.Listen, err), mgr.Shutdown(context.Background()))
	}
	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		proxyLn.Close()
		return errors.Join(fmt.Errorf("admin listen %s: %w", cfg.Admin, err), mgr.Shutdown(context.Background()))
	}
	self := []string{proxyLn.Addr().String(), adminLn.Addr().String()}
	var transparentLn net.Listener // connections iptables redirected (`transparent:`)
	if cfg.Transparent.Enabled() {
		if transparentLn, err = net.Listen("tcp", cfg.Transparent.Listen); err != nil {
			proxyLn.Close()
			adminLn.Close()
			return errors.Join(fmt.Errorf("transparent listen %s: %w", cfg.Transparent.Listen, err), mgr.Shutdown(context.Background()))
		}
		defer transparentLn.Close()
		self = append(self, transparentLn.Addr().String())
	}
	p, err := proxy.New(proxy.Options{Config: cfg, CA: ca, Credentials: mgr, Observer: m, Logger: log, Self: self})
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return errors.Join(err, mgr.Shutdown(context.Background()))
	}
	defer p.Close()
	stopDatabases, err := startDatabases(cfg, mgr, m, log)
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return errors.Join(err, mgr.Shutdown(context.Background()))
	}
	m.WatchLimits(p.Inflight, p.Connections, p.Limits().MaxInflight, p.Limits().MaxConnections)
	rl.attach(p, mgr)
	if err := rl.startTriggers(ctx, o); err != nil {
		proxyLn.Close()
		adminLn.Close()
		return errors.Join(err, mgr.Shutdown(context.Background()))
	}

	var ready atomic.Bool
	adminHandler := admin.New(admin.Options{
		Token:   adminToken,
		Version: version,
		Metrics: m,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("starting or stopping")
			}
			return nil
		},
		CAPEM: ca.PEM,
		Pprof: o.Pprof,
		Control: control.New(control.Options{
			Leases: mgr,
			Config: p.Config, // the config in force: a reload swaps it
			Reload: func() error { return rl.Reload(context.Background()) },
		}),
	})
	proxySrv := p.Server(log)
	adminSrv := &http.Server{Handler: adminHandler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 3)
	go func() { errc <- proxySrv.Serve(proxyLn) }()
	go func() { errc <- adminSrv.Serve(adminLn) }()
	attrs := []any{"listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"rules", len(cfg.Rules), "ca", cfg.CA.Cert, "version", version}
	if transparentLn != nil {
		go func() { errc <- p.ServeTransparent(transparentLn) }()
		attrs = append(attrs, "transparent", transparentLn.Addr().String())
	}
	ready.Store(true)
	log.Info("credproxy started", attrs...)
	printBanner(o.Banner, cfg, proxyLn.Addr().String(), adminLn.Addr().String())
	if o.Ready != nil {
		o.Ready(proxyLn.Addr().String(), adminLn.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	ready.Store(false)
	if transparentLn != nil {
		transparentLn.Close() // no new redirected connections while draining
	}
	log.Info("shutting down: draining requests, then revoking leases")
	return errors.Join(serveErr, shutdown(log, proxySrv, adminSrv, p, mgr, stopDatabases))
}

func shutdown(log *slog.Logger, proxySrv, adminSrv *http.Server, p *proxy.Proxy, mgr *lease.Manager, stopDatabases func(context.Context) error) error {
	drainCtx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	var errs []error
	done := make(chan error, 1)
	go func() { done <- p.Drain(drainCtx) }()
	if err := proxySrv.Shutdown(drainCtx); err != nil {
		errs = append(errs, fmt.Errorf("proxy listener: %w", err))
		proxySrv.Close()
	}
	if err := <-done; err != nil {
		log.Warn("drain ran out of time", "err", err)
	}
	if err := stopDatabases(drainCtx); err != nil {
		errs = append(errs, fmt.Errorf("database listeners: %w", err))
	}
	revokeCtx, cancel2 := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel2()
	if err := mgr.Shutdown(revokeCtx); err != nil {
		errs = append(errs, fmt.Errorf("revoke leases: %w", err))
	}
	_ = adminSrv.Shutdown(revokeCtx)
	return errors.Join(errs...)
}

func openAudit(cfg *rules.Config, fallback io.Writer) (io.Writer, func(), error) {
	if cfg.Audit.File == "" {
		return fallback, func() {}, nil
	}
	f, err := os.OpenFile(cfg.Audit.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit.file: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// printBanner prints what `credproxy env` would for this running proxy.
func printBanner(w io.Writer, cfg *rules.Config, proxyAddr, adminAddr string) {
	if w == nil {
		return
	}
	e, err := buildAgentEnv(cfg, proxyAddr, adminAddr, nil)
	if err != nil {
		fmt.Fprintf(w, "credproxy is listening on %s; the agent environment failed: %v\n", proxyAddr, err)
		return
	}
	fmt.Fprintf(w, "credproxy is listening on %s. Point an agent at it (or run it with credproxy exec -- CMD):\n", proxyAddr)
	_ = writeEnv(w, "sh", e)
}
