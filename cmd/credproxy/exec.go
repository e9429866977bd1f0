package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/credproxy/credproxy/rules"
)

// placeholder replaces, in the agent's environment, every variable a
// credential is read from: the agent's SDK finds a key to send, and the real
// one stays with credproxy.
const placeholder = "credproxy-placeholder"

// forwardedSignals reach the child as they reach credproxy.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

func cmdExec(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("exec", stderr)
	client := fs.String("client", "", "put this client's name and token in the proxy URLs")
	withProxy := fs.Bool("with-proxy", false, "also run the proxy in this process while the command runs")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "credproxy exec: no command: credproxy exec [--config FILE] [--client NAME] [--with-proxy] -- CMD ARGS…")
		return 2
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	proxyAddr, adminAddr := cfg.Listen, cfg.Admin
	stopProxy := func() error { return nil }
	if *withProxy {
		if proxyAddr, adminAddr, stopProxy, err = startProxy(cfg, stderr); err != nil {
			fmt.Fprintln(stderr, "credproxy exec: the proxy did not start, so neither did the command:", err)
			return 1
		}
	}
	code := runChild(cfg, argv, proxyAddr, adminAddr, *client, stdout, stderr)
	if err := stopProxy(); err != nil {
		fmt.Fprintln(stderr, "credproxy exec: proxy shutdown:", err)
	}
	return code
}

// runChild runs argv with the agent environment and returns its exit code.
func runChild(cfg *rules.Config, argv []string, proxyAddr, adminAddr, client string, stdout, stderr io.Writer) int {
	e, err := envFor(cfg, proxyAddr, adminAddr, client)
	if err != nil {
		fmt.Fprintln(stderr, "credproxy exec:", err)
		return 1
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv(os.Environ(), e, credentialEnvNames(cfg))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...) // before Start: no signal falls between
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "credproxy exec:", err)
		if errors.Is(err, exec.ErrNotFound) {
			return 127
		}
		return 126
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	_ = cmd.Wait() // the code below says how it ended
	close(done)
	return exitCode(cmd.ProcessState)
}

// exitCode is the child's exit status, or 128+N if signal N killed it, as a
// shell reports it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// credentialEnvNames are the variables `source: env` credentials read.
func credentialEnvNames(cfg *rules.Config) []string {
	var names []string
	for _, c := range cfg.Credentials {
		if c.Source == "env" && c.Env != "" {
			names = append(names, c.Env)
		}
	}
	sort.Strings(names)
	return names
}

// childEnv is base with e applied: its variables set (NODE_OPTIONS appended
// to), its unset ones removed, and each of secrets set to the placeholder.
func childEnv(base []string, e agentEnv, secrets []string) []string {
	vals := map[string]string{}
	var order []string
	put := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			put(k, v)
		}
	}
	for _, v := range e.Set {
		if old := vals["NODE_OPTIONS"]; v.Name == "NODE_OPTIONS" && old != "" {
			put(v.Name, old+" "+v.Value)
			continue
		}
		put(v.Name, v.Value)
	}
	for _, name := range e.Unset {
		delete(vals, name)
	}
	for _, name := range secrets {
		put(name, placeholder)
	}
	out := make([]string, 0, len(vals))
	for _, k := range order {
		if v, ok := vals[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// startProxy runs serve in this process and returns its bound addresses and
// a stop that drains it and revokes every lease. Warnings and errors are
// logged to stderr; the audit trail goes to audit.file if the config names
// one, else nowhere, since stdout is the command's.
func startProxy(cfg *rules.Config, stderr io.Writer) (proxyAddr, adminAddr string, stop func() error, err error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, serveOptions{Log: log, AuditOut: io.Discard,
			Ready: func(p, a string) { ready <- [2]string{p, a} }})
	}()
	select {
	case a := <-ready:
		return a[0], a[1], func() error { cancel(); return <-done }, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return "", "", nil, err
	}
}
