// Command credproxy is a sidecar forward proxy that holds credentials so AI
// agents never do. Subcommands: run, check, ca, env, exec, iptables, mcp, version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: credproxy <command> [flags]

commands:
  run      --config FILE   run the proxy (default config: $CREDPROXY_CONFIG or rules.yaml);
                           SIGHUP reloads the config, --watch-config also when the file changes
  check    --config FILE   validate a config and print its rules
  ca       --config FILE   print the CA certificate path, creating the CA if absent
  env      --config FILE [--format sh|dotenv|json] [--shell fish] [--client NAME] [--install-node]
                           print the environment an agent needs to use the proxy
  exec     --config FILE [--client NAME] [--with-proxy] -- CMD ARGS...
                           run an agent with that environment, its credential variables
                           replaced by a placeholder (--with-proxy: run the proxy too)
  mcp      [--config FILE] [--admin URL] [--token-file FILE]
                           serve the control API's MCP tools over stdio, calling a running
                           credproxy's admin API (default http://127.0.0.1:9464)
  iptables --config FILE --uid UID [--clean] [--ipv6=false]
                           redirect outbound TCP to the transparent listener (needs NET_ADMIN)
  version                  print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// runMain is main without the process: tests call it directly.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "ca":
		return cmdCA(args, stdout, stderr)
	case "env":
		return cmdEnv(args, stdout, stderr)
	case "exec":
		return cmdExec(args, stdout, stderr)
	case "mcp":
		return cmdMCP(ctx, args, stderr)
	case "iptables":
		return cmdIptables(args, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "credproxy", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "credproxy: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

func defaultConfigPath() string {
	if p := os.Getenv("CREDPROXY_CONFIG"); p != "" {
		return p
	}
	return "rules.yaml"
}

// newFlags returns a flag set with the --config flag every command shares.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("config", defaultConfigPath(), "config file")
}

func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, 0
		}
		return false, 2
	}
	return true, 0
}

// loadFromFlags parses a command's --config flag and loads that file. A nil
// config comes with the exit code to return; errors are on stderr.
func loadFromFlags(name string, args []string, stderr io.Writer) (*rules.Config, int) {
	fs, path := newFlags(name, stderr)
	if ok, code := parseFlags(fs, args); !ok {
		return nil, code
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, 1
	}
	return cfg, 0
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadFromFlags("check", args, stderr)
	if cfg == nil {
		return code
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok: %d rules, %d credentials, %d sources; listen %s, admin %s, unmatched %s\n",
		cfg.Path, len(cfg.Rules), len(cfg.Credentials), len(cfg.Sources), cfg.Listen, cfg.Admin, cfg.Unmatched)
	if t := cfg.Transparent; t.Enabled() {
		fmt.Fprintf(stdout, "  transparent %s: credproxy iptables redirects ports %s, except loopback%s\n", t.Listen, joinInts(t.Ports), excludedText(t))
	}
	for _, r := range cfg.Rules {
		fmt.Fprintf(stdout, "  rule %-16s hosts=%v paths=%v methods=%v credential=%s\n",
			r.Name, r.Hosts, r.Paths, r.Methods, r.Credential)
	}
	printDatabases(stdout, cfg)
	return 0
}

func cmdCA(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadFromFlags("ca", args, stderr)
	if cfg == nil {
		return code
	}
	ca, created, err := proxy.LoadOrCreateCA(cfg.CA.Cert, cfg.CA.Key)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "created a new CA (key %s, mode 0600)\n", cfg.CA.Key)
	}
	fmt.Fprintln(stdout, cfg.CA.Cert)
	fmt.Fprintf(stderr, "sha256 fingerprint %s\n", ca.Fingerprint())
	return 0
}
