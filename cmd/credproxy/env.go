package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// agentEnv is the environment an agent needs to go through credproxy: what
// `credproxy env` prints, the banner shows and `credproxy exec` applies.
type agentEnv struct {
	Set      []envVar // in print order
	Unset    []string
	Comments []string // for people reading the sh, fish or dotenv output
	node     nodePreload
}

type envVar struct{ Name, Value string }

// unsetVars override what the banner's variables set: curl and OpenSSL read
// SSL_CERT_DIR before SSL_CERT_FILE, so a system store there would win.
var unsetVars = []string{"SSL_CERT_DIR"}

// buildAgentEnv creates the CA if absent, writes the bundle and the Node
// preload beside it, and returns the variables for an agent that reaches the
// proxy at proxyAddr. userinfo is "" or a client's "name:token".
func buildAgentEnv(cfg *rules.Config, proxyAddr, adminAddr string, userinfo *url.Userinfo) (agentEnv, error) {
	if _, _, err := proxy.LoadOrCreateCA(cfg.CA.Cert, cfg.CA.Key); err != nil {
		return agentEnv{}, err
	}
	caFile, err := filepath.Abs(cfg.CA.Cert)
	if err != nil {
		return agentEnv{}, err
	}
	bundle, err := ensureBundle(caFile)
	if err != nil {
		return agentEnv{}, err
	}
	node, err := ensureNodePreload(caFile)
	if err != nil {
		return agentEnv{}, err
	}
	proxyURL := (&url.URL{Scheme: "http", User: userinfo, Host: dialable(proxyAddr)}).String()
	noProxy := strings.Join(noProxyHosts(cfg, adminAddr), ",")
	preload := (&url.URL{Scheme: "file", Path: filepath.ToSlash(node.script())}).String()
	e := agentEnv{node: node, Unset: unsetVars, Set: []envVar{
		{"HTTPS_PROXY", proxyURL}, {"https_proxy", proxyURL},
		{"HTTP_PROXY", proxyURL}, {"http_proxy", proxyURL},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy},
		{"SSL_CERT_FILE", bundle}, {"REQUESTS_CA_BUNDLE", bundle}, {"CURL_CA_BUNDLE", bundle},
		{"GIT_SSL_CAINFO", bundle}, {"AWS_CA_BUNDLE", bundle},
		{"NODE_EXTRA_CA_CERTS", caFile}, // Node adds it to its own store
		{"NODE_USE_ENV_PROXY", "1"},     // Node 22.21+ and 24.5+: fetch and http(s) use the proxy
		{"NODE_OPTIONS", "--import " + preload},
	}}
	if !node.Installed {
		e.Comments = append(e.Comments,
			"Node before 22.21/24.5 needs undici for fetch to use the proxy: credproxy env --install-node",
			"(runs npm ci --omit=dev --prefix "+node.Dir+")")
	}
	return e, nil
}

// dialable turns a listen address into one an agent can dial: an unspecified
// host (":3128", "0.0.0.0:3128") becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// noProxyHosts lists the hosts an agent reaches directly: loopback and the
// admin listener, so local traffic and the admin API skip the proxy. A host a
// rule names is left out: the proxy must see that traffic to inject.
func noProxyHosts(cfg *rules.Config, adminAddr string) []string {
	named := map[string]bool{}
	for _, r := range cfg.Rules {
		for _, h := range r.Hosts {
			named[strings.ToLower(hostOnly(h))] = true
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", hostOnly(adminAddr)} {
		if h == "" || seen[h] || named[h] {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}

// hostOnly is hostport's host without brackets, or hostport if it has no port.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// writeEnv prints e in format: sh, fish, dotenv or json.
func writeEnv(w io.Writer, format string, e agentEnv) error {
	var b strings.Builder
	switch format {
	case "sh", "fish", "dotenv":
		for _, c := range e.Comments {
			b.WriteString("# " + oneLine(c) + "\n")
		}
		for _, v := range e.Set {
			switch format {
			case "sh":
				fmt.Fprintf(&b, "export %s=%s\n", v.Name, shQuote(v.Value))
			case "fish":
				fmt.Fprintf(&b, "set -gx %s %s\n", v.Name, fishQuote(v.Value))
			default:
				if strings.ContainsAny(v.Value, "\r\n") {
					return fmt.Errorf("%s: a dotenv value cannot hold a line break", v.Name)
				}
				fmt.Fprintf(&b, "%s=%s\n", v.Name, dotenvQuote(v.Value))
			}
		}
		for _, name := range e.Unset {
			switch format {
			case "sh":
				b.WriteString("unset " + name + "\n")
			case "fish":
				b.WriteString("set -e " + name + "\n")
			} // dotenv cannot unset: the variable is left out
		}
	case "json":
		set := map[string]string{}
		for _, v := range e.Set {
			set[v.Name] = v.Value
		}
		data, err := json.MarshalIndent(struct {
			Set      map[string]string `json:"set"`
			Unset    []string          `json:"unset"`
			Comments []string          `json:"comments,omitempty"`
		}{set, e.Unset, e.Comments}, "", "  ")
		if err != nil {
			return err
		}
		b.Write(append(data, '\n'))
	default:
		return fmt.Errorf("--format %q: want sh, dotenv or json", format)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine keeps a comment on its line: a line break in a path would otherwise
// end the comment and run the rest as a command under eval.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// safeWord reports whether s needs no quoting in sh, fish or dotenv.
func safeWord(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_@%+=:,./-", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// shQuote single-quotes s for POSIX sh: nothing inside is special but ', which
// is written as '\”.
func shQuote(s string) string {
	if safeWord(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// fishQuote single-quotes s for fish, where \ and ' are escaped inside.
func fishQuote(s string) string {
	if safeWord(s) {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// dotenvQuote double-quotes s with \ " $ ` escaped: read the same by docker
// compose, python-dotenv and `set -a; . file` in sh.
func dotenvQuote(s string) string {
	if safeWord(s) {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`").Replace(s) + `"`
}

// clientUserinfo returns the proxy URL's userinfo for the client name, ""
// for none.
func clientUserinfo(cfg *rules.Config, name string) (*url.Userinfo, error) {
	if name == "" {
		return nil, nil
	}
	for _, c := range cfg.Clients {
		if c.Name == name {
			return url.UserPassword(c.Name, c.Token.Reveal()), nil
		}
	}
	if len(cfg.Clients) == 0 {
		return nil, fmt.Errorf("--client %s: the config has no clients", name)
	}
	return nil, fmt.Errorf("--client %s: no such client in %s", name, cfg.Path)
}

func cmdEnv(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("env", stderr)
	format := fs.String("format", "sh", "output format: sh, dotenv or json")
	shell := fs.String("shell", "", "fish: print fish syntax instead of sh")
	client := fs.String("client", "", "put this client's name and token in the proxy URLs")
	install := fs.Bool("install-node", false, "run npm ci to install the Node preload's undici if it is missing")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	switch *shell {
	case "", "sh", "bash", "zsh":
	case "fish":
		if *format != "sh" {
			fmt.Fprintln(stderr, "credproxy env: --shell fish prints fish syntax; it does not go with --format", *format)
			return 2
		}
		*format = "fish"
	default:
		fmt.Fprintf(stderr, "credproxy env: --shell %q: want sh or fish\n", *shell)
		return 2
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	e, err := envFor(cfg, cfg.Listen, cfg.Admin, *client)
	if err == nil && *install && !e.node.Installed {
		if err = installNode(e.node, stderr); err == nil {
			e, err = envFor(cfg, cfg.Listen, cfg.Admin, *client)
		}
	}
	if err == nil {
		err = writeEnv(stdout, *format, e)
	}
	if err != nil {
		fmt.Fprintln(stderr, "credproxy env:", err)
		return 1
	}
	return 0
}

// envFor is buildAgentEnv for the client name ("" for none).
func envFor(cfg *rules.Config, proxyAddr, adminAddr, client string) (agentEnv, error) {
	user, err := clientUserinfo(cfg, client)
	if err != nil {
		return agentEnv{}, err
	}
	return buildAgentEnv(cfg, proxyAddr, adminAddr, user)
}
