package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/mcpserver"
	"github.com/credproxy/credproxy/rules"
)

// defaultAdminURL is where `credproxy mcp` finds a running credproxy's
// admin API when neither --admin nor $CREDPROXY_ADMIN_URL says.
const defaultAdminURL = "http://127.0.0.1:9464"

// cmdMCP serves credproxy's MCP tools over stdio for an agent that starts
// MCP servers as subprocesses. The tools call a running credproxy's admin
// API with the admin token; this process holds no lease and no value.
func cmdMCP(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", envOr("CREDPROXY_ADMIN_URL", defaultAdminURL), "a running credproxy's admin API ($CREDPROXY_ADMIN_URL)")
	tokenFile := fs.String("token-file", os.Getenv("CREDPROXY_ADMIN_TOKEN_FILE"), "file holding the admin token ($CREDPROXY_ADMIN_TOKEN_FILE)")
	cfgFile := fs.String("config", "", "the running credproxy's config: its admin listener and tokenFile, unless --admin or --token-file (or their variables) say otherwise")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if *cfgFile != "" {
		set := map[string]bool{
			"admin":      os.Getenv("CREDPROXY_ADMIN_URL") != "",
			"token-file": os.Getenv("CREDPROXY_ADMIN_TOKEN_FILE") != "",
		}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		cfg, err := rules.Load(*cfgFile)
		if err != nil {
			fmt.Fprintf(stderr, "credproxy mcp: --config: %v\n", err)
			return 2
		}
		if !set["admin"] {
			*admin = adminURLOf(cfg.Admin)
		}
		if !set["token-file"] {
			*tokenFile = cfg.AdminTokenFile
		}
	}
	if *tokenFile == "" {
		fmt.Fprintln(stderr, "credproxy mcp: --token-file (or $CREDPROXY_ADMIN_TOKEN_FILE) is required: the control API refuses calls without the admin token")
		return 2
	}
	// The one reader of admin token files (its errors never quote the file).
	token, err := (&rules.Config{AdminTokenFile: *tokenFile}).AdminToken()
	if err != nil {
		fmt.Fprintf(stderr, "credproxy mcp: --token-file: %v\n", err)
		return 2
	}
	cl, err := mcpserver.NewClient(*admin, token)
	if err != nil {
		fmt.Fprintf(stderr, "credproxy mcp: --admin: %v\n", err)
		return 2
	}
	s := mcpserver.New(cl, mcpserver.Options{Version: version})
	// stdin and stdout carry JSON-RPC. A frame is bounded by the SDK's
	// default (16 MiB; past it the stream cannot be resynchronised and the
	// server stops); the admin API bounds each call's body to 1 MiB, and a
	// call over that is a tool error, not the end of the session.
	err = s.Run(ctx, &mcp.StdioTransport{})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "credproxy mcp: %v\n", err)
		return 1
	}
	return 0
}

// adminURLOf is the URL to reach an admin listener on listen (host:port):
// an unspecified host (0.0.0.0, ::, empty) is reached on loopback.
func adminURLOf(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen // NewClient says what is wrong with it
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
