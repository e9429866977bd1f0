package proxy_test

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/credproxy/credproxy/internal/netnstest"
	"github.com/credproxy/credproxy/proxy"
)

// TestOriginalDst redirects connections with iptables and ip6tables in a
// network namespace and reads where they were going, IPv4 and IPv6.
func TestOriginalDst(t *testing.T) {
	ns, other := netnstest.New(t), netnstest.New(t)
	// A link to another namespace gives ns routes to somewhere else.
	dev, _ := netnstest.Link(t, ns, other, "10.99.0.1/24", "10.99.0.2/24")
	ns.Run(t, "ip", "-6", "addr", "add", "fd99::1/64", "dev", dev, "nodad")
	for _, c := range []struct {
		tool, listen, dial string
	}{
		{"iptables", "127.0.0.1:15001", "10.99.0.2:443"},
		{"ip6tables", "[::1]:15001", "[fd99::2]:8443"},
	} {
		t.Run(c.tool, func(t *testing.T) {
			want := netip.MustParseAddrPort(c.dial)
			ns.Run(t, c.tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", strconv.Itoa(int(want.Port())),
				"-j", "REDIRECT", "--to-ports", "15001")
			ln := ns.Listen(t, "tcp", c.listen)
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, _ := ln.Accept()
				accepted <- c
			}()
			client := ns.Dial(t, "tcp", c.dial)
			defer client.Close()
			server := <-accepted
			if server == nil {
				t.Fatal("the redirected connection was not accepted")
			}
			defer server.Close()
			got, err := proxy.OriginalDst(server)
			if err != nil || got != want {
				t.Errorf("OriginalDst = %v, %v; want %v (accepted on %v)", got, err, want, server.LocalAddr())
			}
		})
	}
	// Not redirected: the connection's own address, which the transparent
	// listener then refuses as its own.
	ln := ns.Listen(t, "tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			got, err := proxy.OriginalDst(c)
			if err != nil || got.String() != ln.Addr().String() {
				t.Errorf("OriginalDst of a direct connection = %v, %v; want the listener's own %v", got, err, ln.Addr())
			}
			c.Close()
		}
	}()
	c := ns.Dial(t, "tcp", ln.Addr().String())
	_, _ = c.Read(make([]byte, 1))
	c.Close()
}
