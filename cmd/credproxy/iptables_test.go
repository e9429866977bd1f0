package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/netnstest"
	"github.com/credproxy/credproxy/rules"
)

func TestRedirectRules(t *testing.T) {
	cfg, err := rules.Parse("t.yaml", []byte("transparent: {listen: 127.0.0.1:15001, ports: [443, 8443], excludeCIDRs: [10.96.0.0/12, fd00::/8]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	v4 := redirectRules(cfg.Transparent, 65532, false)
	want4 := []string{
		"-m owner --uid-owner 65532 -j RETURN",
		"-o lo -j RETURN",
		"-d 127.0.0.0/8 -j RETURN",
		"-d 10.96.0.0/12 -j RETURN",
		"-p tcp --dport 443 -j REDIRECT --to-ports 15001",
		"-p tcp --dport 8443 -j REDIRECT --to-ports 15001",
	}
	want6 := []string{want4[0], want4[1], "-d ::1/128 -j RETURN", "-d fd00::/8 -j RETURN", want4[4], want4[5]}
	for _, c := range []struct {
		got  [][]string
		want []string
	}{{v4, want4}, {redirectRules(cfg.Transparent, 65532, true), want6}} {
		var got []string
		for _, r := range c.got {
			got = append(got, strings.Join(r, " "))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
		}
	}
}

// iptablesIn runs this test binary as `credproxy iptables args...` inside ns,
// as root or, with asNobody, as uid 65534 without capabilities.
func iptablesIn(t *testing.T, ns *netnstest.NS, env []string, asNobody bool, args ...string) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{self, "iptables"}, args...)
	if asNobody {
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
	}
	argv = append(append([]string{"env", "CREDPROXY_TEST_MAIN=1"}, env...), argv...)
	out, err := ns.Command(ctx, argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// natRules lists the nat table of ns, one family.
func natRules(t *testing.T, ns *netnstest.NS, tool string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(ns.Run(t, tool, "-t", "nat", "-S")), "\n") {
		if !strings.HasPrefix(l, "-P ") {
			out = append(out, l)
		}
	}
	return out
}

func TestIptablesInstallTwiceAndClean(t *testing.T) {
	ns := netnstest.New(t)
	cfg := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(cfg, []byte("transparent: {listen: 127.0.0.1:15001, excludeCIDRs: [10.96.0.0/12]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := iptablesIn(t, ns, nil, false, "--config", cfg, "--uid", "65532")
	if err != nil {
		t.Fatalf("credproxy iptables: %v\n%s", err, out)
	}
	if !strings.Contains(out, "iptables -t nat -A CREDPROXY_OUTPUT -p tcp --dport 443 -j REDIRECT --to-ports 15001") ||
		!strings.Contains(out, "except uid 65532, loopback, 10.96.0.0/12") {
		t.Errorf("credproxy iptables should print the rules it added and a summary; printed:\n%s", out)
	}
	first4, first6 := natRules(t, ns, "iptables"), natRules(t, ns, "ip6tables")
	if out, err := iptablesIn(t, ns, nil, false, "--config", cfg, "--uid", "65532"); err != nil {
		t.Fatalf("credproxy iptables, a second time: %v\n%s", err, out)
	}
	want4 := []string{
		"-N CREDPROXY_OUTPUT",
		"-A OUTPUT -p tcp -j CREDPROXY_OUTPUT",
		"-A CREDPROXY_OUTPUT -m owner --uid-owner 65532 -j RETURN",
		"-A CREDPROXY_OUTPUT -o lo -j RETURN",
		"-A CREDPROXY_OUTPUT -d 127.0.0.0/8 -j RETURN",
		"-A CREDPROXY_OUTPUT -d 10.96.0.0/12 -j RETURN",
		"-A CREDPROXY_OUTPUT -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 15001",
		"-A CREDPROXY_OUTPUT -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001",
	}
	if got := natRules(t, ns, "iptables"); !slices.Equal(got, want4) || !slices.Equal(got, first4) {
		t.Errorf("after installing twice, the nat table holds:\n%s\nwant one set:\n%s", strings.Join(got, "\n"), strings.Join(want4, "\n"))
	}
	if got := natRules(t, ns, "ip6tables"); len(got) != 7 || !slices.Equal(got, first6) {
		t.Errorf("after installing twice, the ip6tables nat table holds:\n%s\nwant the 7 rules of the first run", strings.Join(got, "\n"))
	}
	out, err = iptablesIn(t, ns, nil, false, "--config", cfg, "--clean")
	if err != nil {
		t.Fatalf("credproxy iptables --clean: %v\n%s", err, out)
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if got := natRules(t, ns, tool); len(got) != 0 {
			t.Errorf("after --clean, %s nat holds %q, want nothing", tool, got)
		}
	}
	if out, err := iptablesIn(t, ns, nil, false, "--config", cfg, "--clean"); err != nil {
		t.Errorf("--clean with nothing installed: %v\n%s", err, out)
	}
}

func TestIptablesErrors(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // readable by uid 65534
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(cfg, []byte("transparent: {listen: 127.0.0.1:15001}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(plain, []byte("listen: 127.0.0.1:3128\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		env      []string
		asNobody bool
		args     []string
		want     string
	}{
		{"no NET_ADMIN", nil, true, []string{"--config", cfg, "--uid", "65532"}, "needs the NET_ADMIN capability"},
		{"no iptables", []string{"PATH=/nonexistent"}, false, []string{"--config", cfg, "--uid", "65532"}, "iptables not found in $PATH: install it"},
		{"no transparent block", nil, false, []string{"--config", plain, "--uid", "65532"}, "has no transparent: block"},
		{"no uid", nil, false, []string{"--config", cfg}, "--uid is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := iptablesIn(t, ns, c.env, c.asNobody, c.args...)
			var exit *exec.ExitError
			if err == nil || !errors.As(err, &exit) || !strings.Contains(out, c.want) {
				t.Errorf("credproxy iptables %v: %v\n%s\nwant a failure saying %q", c.args, err, out, c.want)
			}
		})
	}
	if got := natRules(t, ns, "iptables"); len(got) != 0 {
		t.Errorf("after failed runs, nat holds %q, want nothing", got)
	}
}

func TestCheckPrintsTransparent(t *testing.T) {
	var out, errb strings.Builder
	if code := runMain(context.Background(), []string{"check", "--config", "../../rules/testdata/transparent.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("check: %d %s", code, errb.String())
	}
	if want := "transparent 127.0.0.1:15001: credproxy iptables redirects ports 443,80, except loopback, 10.96.0.0/12, fd00::/64"; !strings.Contains(out.String(), want) {
		t.Errorf("check printed %q, want a line %q", out.String(), want)
	}
}
