package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"

	"github.com/credproxy/credproxy/rules"
)

// iptablesChain holds every redirect rule `credproxy iptables` installs, so
// that reinstalling and --clean touch nothing else in the nat table.
const iptablesChain = "CREDPROXY_OUTPUT"

// cmdIptables installs (or, with --clean, removes) the nat OUTPUT rules that
// redirect outbound TCP to the configured ports to the transparent listener,
// except credproxy's own traffic (its uid), loopback and the excluded CIDRs.
// It runs iptables and ip6tables, which need NET_ADMIN: in a pod, an init
// container does this once; credproxy itself then runs without it.
func cmdIptables(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("iptables", stderr)
	uid := fs.Int("uid", -1, "credproxy's own user id: its connections are never redirected (required)")
	clean := fs.Bool("clean", false, "remove the rules instead of installing them")
	ipv6 := fs.Bool("ipv6", true, "also install the rules with ip6tables")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	cfg, err := rules.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !cfg.Transparent.Enabled() {
		fmt.Fprintf(stderr, "credproxy iptables: %s has no transparent: block (transparent: {listen: 127.0.0.1:15001}); nothing to redirect to\n", cfg.Path)
		return 2
	}
	if *uid < 0 && !*clean {
		fmt.Fprintln(stderr, "credproxy iptables: --uid is required: the user id credproxy runs as, whose own connections must not be redirected back into it")
		return 2
	}
	tools := []string{"iptables"}
	if *ipv6 {
		tools = append(tools, "ip6tables")
	}
	for _, tool := range tools {
		ipt := &iptables{tool: tool, out: stdout}
		if *clean {
			err = ipt.clean()
		} else {
			err = ipt.install(redirectRules(cfg.Transparent, *uid, tool == "ip6tables"))
		}
		if err != nil {
			fmt.Fprintln(stderr, "credproxy iptables:", err)
			return 1
		}
	}
	if *clean {
		fmt.Fprintf(stdout, "removed chain %s and its jump from nat OUTPUT (%s)\n", iptablesChain, strings.Join(tools, ", "))
		return 0
	}
	fmt.Fprintf(stdout, "outbound TCP to ports %s now goes to the transparent listener port %d (%s), except uid %d, loopback%s\n",
		joinInts(cfg.Transparent.Ports), cfg.Transparent.ListenPort(), strings.Join(tools, ", "), *uid, excludedText(cfg.Transparent))
	return 0
}

// redirectRules are the rules of iptablesChain, in order: the exclusions
// return first, then each port is redirected.
func redirectRules(t rules.Transparent, uid int, v6 bool) [][]string {
	loopback := "127.0.0.0/8"
	if v6 {
		loopback = "::1/128"
	}
	out := [][]string{
		// credproxy's own upstream connections: redirecting them would loop.
		{"-m", "owner", "--uid-owner", strconv.Itoa(uid), "-j", "RETURN"},
		{"-o", "lo", "-j", "RETURN"},
		{"-d", loopback, "-j", "RETURN"},
	}
	for _, p := range t.ExcludeCIDRs {
		if p.Addr().Is6() == v6 {
			out = append(out, []string{"-d", p.String(), "-j", "RETURN"})
		}
	}
	for _, port := range t.Ports {
		out = append(out, []string{"-p", "tcp", "--dport", strconv.Itoa(port), "-j", "REDIRECT", "--to-ports", strconv.Itoa(t.ListenPort())})
	}
	return out
}

// jumpRule sends locally generated TCP through iptablesChain.
var jumpRule = []string{"OUTPUT", "-p", "tcp", "-j", iptablesChain}

// iptables runs one of iptables and ip6tables on the nat table, printing
// every command that changes something.
type iptables struct {
	tool string
	out  io.Writer
}

// install makes iptablesChain hold exactly rs and OUTPUT jump to it once:
// running it twice leaves one set of rules.
func (t *iptables) install(rs [][]string) error {
	exists, err := t.probe("-S", iptablesChain)
	if err != nil {
		return err
	}
	if exists {
		err = t.change("-F", iptablesChain)
	} else {
		err = t.change("-N", iptablesChain)
	}
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := t.change(append([]string{"-A", iptablesChain}, r...)...); err != nil {
			return err
		}
	}
	if jumps, err := t.probe(append([]string{"-C"}, jumpRule...)...); err != nil || jumps {
		return err
	}
	return t.change(append([]string{"-A"}, jumpRule...)...)
}

// clean removes the jump (every copy) and the chain, if present.
func (t *iptables) clean() error {
	for range 100 { // bounded: each round deletes one jump
		jumps, err := t.probe(append([]string{"-C"}, jumpRule...)...)
		if err != nil {
			return err
		}
		if !jumps {
			break
		}
		if err := t.change(append([]string{"-D"}, jumpRule...)...); err != nil {
			return err
		}
	}
	exists, err := t.probe("-S", iptablesChain)
	if err != nil || !exists {
		return err
	}
	if err := t.change("-F", iptablesChain); err != nil {
		return err
	}
	return t.change("-X", iptablesChain)
}

// probe runs a query: false when it exits non-zero for an ordinary reason
// (no such chain or rule), an error when iptables cannot run at all.
func (t *iptables) probe(args ...string) (bool, error) {
	_, err := t.run(args)
	var exit *exec.ExitError
	if errors.As(err, &exit) && !errors.Is(err, errNoNetAdmin) {
		return false, nil
	}
	return err == nil, err
}

func (t *iptables) change(args ...string) error {
	fmt.Fprintln(t.out, t.tool, "-t nat", strings.Join(args, " "))
	_, err := t.run(args)
	return err
}

// errNoNetAdmin marks an iptables failure for lack of privilege.
var errNoNetAdmin = errors.New("iptables needs the NET_ADMIN capability: run credproxy iptables as root or in an init container with securityContext.capabilities.add: [NET_ADMIN]")

func (t *iptables) run(args []string) ([]byte, error) {
	bin, err := exec.LookPath(t.tool)
	if err != nil {
		return nil, fmt.Errorf("%s not found in $PATH: install it (Debian and Ubuntu: apt-get install iptables): %w", t.tool, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"-w", "5", "-t", "nat"}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		return out, nil
	}
	msg := strings.TrimSpace(stderr.String())
	cmdline := t.tool + " -t nat " + strings.Join(args, " ")
	if low := strings.ToLower(msg); strings.Contains(low, "permission denied") || strings.Contains(low, "must be root") ||
		strings.Contains(low, "operation not permitted") {
		return nil, fmt.Errorf("%s: %s: %w: %w", cmdline, msg, errNoNetAdmin, err)
	}
	return nil, fmt.Errorf("%s: %s: %w", cmdline, msg, err)
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func excludedText(t rules.Transparent) string {
	if len(t.ExcludeCIDRs) == 0 {
		return ""
	}
	s := make([]string, len(t.ExcludeCIDRs))
	for i, p := range t.ExcludeCIDRs {
		s[i] = p.String()
	}
	return ", " + strings.Join(s, ", ")
}
