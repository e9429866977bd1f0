package rules

import (
	"net/netip"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits bound what agents can make credproxy hold: the `limits:` block.
type Limits struct {
	MaxHeaderBytes  int           // request line and headers from an agent
	HeaderTimeout   time.Duration // to send one request's headers, on any connection
	IdleTimeout     time.Duration // an idle keep-alive connection or tunnel is closed
	MaxConnections  int           // concurrent agent connections (tunnels and intercepted)
	MaxInflight     int           // concurrent upstream requests
	MaxPurposeBytes int           // X-Credproxy-Purpose is cut to this in the audit trail
}

// DefaultLimits is the `limits:` block when the file has none.
var DefaultLimits = Limits{
	MaxHeaderBytes:  64 << 10,
	HeaderTimeout:   30 * time.Second,
	IdleTimeout:     5 * time.Minute,
	MaxConnections:  4096,
	MaxInflight:     1024,
	MaxPurposeBytes: 256,
}

// Defaults of the `upstream:` block.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultResponseHeaderTimeout = 5 * time.Minute
	DefaultStreamWindow          = 256 << 10
)

// upstream decodes the `upstream:` block.
func (l *loader) upstream(n *yaml.Node) Upstream {
	f := l.fields(n, "upstream", "caFiles", "http2", "dialTimeout", "responseHeaderTimeout", "streamWindow", "connectTo")
	u := Upstream{
		HTTP2:                 l.boolean(f["http2"], "upstream.http2", true),
		DialTimeout:           l.duration(f["dialTimeout"], "upstream.dialTimeout", DefaultDialTimeout),
		ResponseHeaderTimeout: l.duration(f["responseHeaderTimeout"], "upstream.responseHeaderTimeout", DefaultResponseHeaderTimeout),
		StreamWindow:          l.integer(f["streamWindow"], "upstream.streamWindow", DefaultStreamWindow),
	}
	for i, p := range l.strs(f["caFiles"], "upstream.caFiles") {
		if p == "" {
			l.errf(index("upstream.caFiles", i), "empty path")
			continue
		}
		u.CAFiles = append(u.CAFiles, l.abs(p))
	}
	u.ConnectTo = l.connectTo(f["connectTo"])
	return u
}

// connectTo decodes `upstream.connectTo`: {"host:port": "ip:port"}. Keys
// are normalised like every destination; values must be IP literals, so a
// remapped name cannot be remapped again by DNS.
func (l *loader) connectTo(n *yaml.Node) map[string]string {
	es := l.entries(n, "upstream.connectTo")
	if len(es) == 0 {
		return nil
	}
	out := make(map[string]string, len(es))
	for _, e := range es {
		from, err := ParseDest(e.key, 0)
		if err != nil {
			l.errf(e.field, "key must be host:port: %v", err)
			continue
		}
		v, _ := l.scalar(e.value, e.field)
		to, err := ParseDest(v, 0)
		if err != nil {
			l.errf(e.field, "value must be ip:port: %v", err)
			continue
		}
		if _, err := netip.ParseAddr(to.Host); err != nil {
			l.errf(e.field, "value must be an IP literal and port, not %q", v)
			continue
		}
		out[from.String()] = to.String()
	}
	return out
}

// limits decodes the `limits:` block.
func (l *loader) limits(n *yaml.Node) Limits {
	f := l.fields(n, "limits", "maxHeaderBytes", "headerTimeout", "idleTimeout",
		"maxConnections", "maxInflight", "maxPurposeBytes")
	d := DefaultLimits
	return Limits{
		MaxHeaderBytes:  l.integer(f["maxHeaderBytes"], "limits.maxHeaderBytes", d.MaxHeaderBytes),
		HeaderTimeout:   l.duration(f["headerTimeout"], "limits.headerTimeout", d.HeaderTimeout),
		IdleTimeout:     l.duration(f["idleTimeout"], "limits.idleTimeout", d.IdleTimeout),
		MaxConnections:  l.integer(f["maxConnections"], "limits.maxConnections", d.MaxConnections),
		MaxInflight:     l.integer(f["maxInflight"], "limits.maxInflight", d.MaxInflight),
		MaxPurposeBytes: l.integer(f["maxPurposeBytes"], "limits.maxPurposeBytes", d.MaxPurposeBytes),
	}
}

// checkLimits keeps every limit and timeout within bounds that a proxy can
// live with: a zero timeout would never fire, a huge window or header limit
// lets one agent pin the proxy's memory.
func (l *loader) checkLimits(c *Config) {
	u, lim := c.Upstream, c.Limits
	l.checkDuration("upstream.dialTimeout", u.DialTimeout, 5*time.Minute)
	l.checkDuration("upstream.responseHeaderTimeout", u.ResponseHeaderTimeout, time.Hour)
	l.checkInt("upstream.streamWindow", u.StreamWindow, 65535, 16<<20) // HTTP/2's initial window .. 16 MiB
	l.checkInt("limits.maxHeaderBytes", lim.MaxHeaderBytes, 4096, 1<<20)
	l.checkDuration("limits.headerTimeout", lim.HeaderTimeout, 10*time.Minute)
	l.checkDuration("limits.idleTimeout", lim.IdleTimeout, 24*time.Hour)
	l.checkInt("limits.maxConnections", lim.MaxConnections, 1, 1<<20)
	l.checkInt("limits.maxInflight", lim.MaxInflight, 1, 1<<20)
	l.checkInt("limits.maxPurposeBytes", lim.MaxPurposeBytes, 1, 4096)
}

func (l *loader) checkDuration(field string, d, max time.Duration) {
	switch {
	case d <= 0:
		l.errf(field, "must be positive, not %v", d)
	case d > max:
		l.errf(field, "must be at most %v, not %v", max, d)
	}
}

func (l *loader) checkInt(field string, n, min, max int) {
	if n < min || n > max {
		l.errf(field, "must be between %d and %d, not %d", min, max, n)
	}
}
