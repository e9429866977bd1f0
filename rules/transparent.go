package rules

import (
	"net"
	"net/netip"
	"strconv"

	"gopkg.in/yaml.v3"
)

// DefaultTransparentPorts are the destination ports `credproxy iptables`
// redirects when `transparent.ports` is not set: HTTPS and plain HTTP.
var DefaultTransparentPorts = []int{443, 80}

// Transparent is the `transparent:` block: a listener for outbound
// connections that iptables redirected to credproxy (`credproxy iptables`),
// so that clients ignoring HTTPS_PROXY still pass through it.
type Transparent struct {
	// Listen is the address redirected connections arrive on; "" when the
	// block is absent and transparent interception is off.
	Listen string
	// Ports are the destination ports `credproxy iptables` redirects.
	Ports []int
	// ExcludeCIDRs are destinations `credproxy iptables` never redirects.
	ExcludeCIDRs []netip.Prefix
}

// Enabled reports whether the config has a `transparent:` block.
func (t Transparent) Enabled() bool { return t.Listen != "" }

// ListenPort is the port of Listen (0 when it has none).
func (t Transparent) ListenPort() int {
	_, port, err := net.SplitHostPort(t.Listen)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}

// transparent decodes `transparent:`.
func (l *loader) transparent(n *yaml.Node) Transparent {
	if resolve(n) == nil {
		return Transparent{}
	}
	f := l.fields(n, "transparent", "listen", "ports", "excludeCIDRs")
	t := Transparent{Listen: l.str(f["listen"], "transparent.listen", "")}
	for i, s := range l.strs(f["ports"], "transparent.ports") {
		field := index("transparent.ports", i)
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			l.errf(field, "want a port between 1 and 65535, not %q", s)
			continue
		}
		t.Ports = append(t.Ports, p)
	}
	if !l.has("transparent.ports") {
		t.Ports = append([]int(nil), DefaultTransparentPorts...)
	}
	for i, s := range l.strs(f["excludeCIDRs"], "transparent.excludeCIDRs") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			l.errf(index("transparent.excludeCIDRs", i), "want a CIDR such as 10.0.0.0/8: %v", err)
			continue
		}
		t.ExcludeCIDRs = append(t.ExcludeCIDRs, p.Masked())
	}
	return t
}

// checkTransparent runs once the whole config is decoded.
func (l *loader) checkTransparent(c *Config) {
	if !l.has("transparent") {
		return
	}
	t := c.Transparent
	if t.Listen == "" {
		l.errf("transparent.listen", "required: the address redirected connections arrive on, as in 127.0.0.1:15001")
		return
	}
	l.checkListen(t.Listen, "transparent.listen")
	if t.ListenPort() == 0 {
		l.errf("transparent.listen", "needs a fixed port (iptables redirects to it), not 0")
	}
	if len(t.Ports) == 0 {
		l.errf("transparent.ports", "empty: no port would be redirected")
	}
	// A redirected connection carries no Proxy-Authorization, so it could
	// only use the fixed identity, bypassing the per-client tokens.
	if c.RequiresAuth() {
		l.errf("transparent", "cannot be combined with clients: a redirected connection carries no Proxy-Authorization to name its client")
	}
}
