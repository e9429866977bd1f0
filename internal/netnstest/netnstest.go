// Package netnstest gives tests Linux network namespaces: a pod is one
// namespace its containers share, a compose project a few joined by veth
// pairs. Each namespace (and its /etc/netns/NAME directory, which
// `ip netns exec` mounts over /etc) is removed when the test ends, pass or
// fail. Tests that use it need root, and fail without it: CI runs as root.
package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cmdTimeout bounds every ip command.
const cmdTimeout = 30 * time.Second

var seq atomic.Int64

// uniq is short (interface names are at most 15 bytes) and unique across
// concurrent test processes: the pid, then a counter.
func uniq(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, os.Getpid()%1000000, seq.Add(1))
}

// RequireRoot fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates network namespaces and needs root (CI runs it as root)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/test.sh installs iproute2 and iptables): %v", tool, err)
		}
	}
}

// NS is a network namespace the test created.
type NS struct {
	Name string
}

// New creates a namespace with loopback up, deleted when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	n := &NS{Name: uniq("cpns")}
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		if out, err := output("ip", "netns", "del", n.Name); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
		_ = os.RemoveAll(filepath.Join("/etc/netns", n.Name))
	})
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Hosts writes the namespace's /etc/hosts, which processes started with
// Command (ip netns exec) see: name resolution local to the namespace.
func (n *NS) Hosts(t testing.TB, lines ...string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	text := "127.0.0.1 localhost\n::1 localhost\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Command is name args... run inside the namespace (ip netns exec), with
// its /etc/netns files mounted over /etc.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command in the namespace and fails the test if it fails.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command (in the test's own namespace), bounded, and fails the
// test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := output(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// output runs a command, bounded by cmdTimeout.
func output(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// Link joins a and b with a veth pair and gives each end an address (CIDR
// notation: 10.77.0.1/24), both up. It returns the two ends' names.
func Link(t testing.TB, a, b *NS, aAddr, bAddr string) (aDev, bDev string) {
	t.Helper()
	ea, eb := uniq("cpa"), uniq("cpb")
	Run(t, "ip", "link", "add", ea, "type", "veth", "peer", "name", eb)
	t.Cleanup(func() { _, _ = output("ip", "link", "del", ea) }) // gone with its namespace, unless a move failed
	Run(t, "ip", "link", "set", ea, "netns", a.Name)
	Run(t, "ip", "link", "set", eb, "netns", b.Name)
	a.Run(t, "ip", "addr", "add", aAddr, "dev", ea)
	b.Run(t, "ip", "addr", "add", bAddr, "dev", eb)
	a.Run(t, "ip", "link", "set", ea, "up")
	b.Run(t, "ip", "link", "set", eb, "up")
	return ea, eb
}

// Listen opens a listener inside the namespace from this process: a socket
// belongs to the namespace of the thread that created it, so one OS thread
// enters the namespace, creates the socket and leaves. The test serves it
// like any other listener and closes it itself.
func (n *NS) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	ln, err := within(n, func() (net.Listener, error) { return net.Listen(network, addr) })
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, n.Name, err)
	}
	return ln
}

// Dial connects from inside the namespace, as Listen listens.
func (n *NS) Dial(t testing.TB, network, addr string) net.Conn {
	t.Helper()
	c, err := within(n, func() (net.Conn, error) { return net.DialTimeout(network, addr, 10*time.Second) })
	if err != nil {
		t.Fatalf("dial %s %s in %s: %v", network, addr, n.Name, err)
	}
	return c
}

// within runs f on an OS thread of its own inside n. If leaving the
// namespace fails, the goroutine exits still locked and the runtime ends
// its thread, so no other goroutine ever runs in the namespace by accident.
func within[T any](n *NS, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		v, err := n.inside(func() (any, error) { return f() })
		r := result{err: err}
		if v != nil {
			r.v = v.(T)
		}
		ch <- r
	}()
	r := <-ch
	return r.v, r.err
}

// inside runs f with the calling (locked) thread in the namespace; it
// unlocks the thread only once it is back in its own namespace.
func (n *NS) inside(f func() (any, error)) (any, error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer self.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", n.Name))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns: %w", err)
	}
	v, ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		if c, ok := v.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		return nil, fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return v, ferr
}

// Bridge is a switch that namespaces join, as the containers of a compose
// project join its network: a Linux bridge in a namespace of its own.
type Bridge struct {
	hub *NS
}

// NewBridge creates the bridge, removed with its namespace when the test ends.
func NewBridge(t testing.TB) *Bridge {
	t.Helper()
	b := &Bridge{hub: New(t)}
	b.hub.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	b.hub.Run(t, "ip", "link", "set", "br0", "up")
	return b
}

// Attach joins ns to the bridge with a veth pair whose end in ns has addr
// (CIDR notation).
func (b *Bridge) Attach(t testing.TB, ns *NS, addr string) {
	t.Helper()
	ea, eb := uniq("cpa"), uniq("cpb")
	Run(t, "ip", "link", "add", ea, "type", "veth", "peer", "name", eb)
	t.Cleanup(func() { _, _ = output("ip", "link", "del", ea) })
	Run(t, "ip", "link", "set", ea, "netns", ns.Name)
	Run(t, "ip", "link", "set", eb, "netns", b.hub.Name)
	ns.Run(t, "ip", "addr", "add", addr, "dev", ea)
	ns.Run(t, "ip", "link", "set", ea, "up")
	b.hub.Run(t, "ip", "link", "set", eb, "master", "br0")
	b.hub.Run(t, "ip", "link", "set", eb, "up")
}
