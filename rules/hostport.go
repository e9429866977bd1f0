package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Dest is a normalised destination: host in lower case without a trailing
// dot, an IPv6 literal without brackets, and a port. Two spellings of one
// destination give equal Dests, so a Dest can be compared with ==.
type Dest struct {
	Host string
	Port int
}

// String returns host:port, with brackets around an IPv6 host.
func (d Dest) String() string {
	return net.JoinHostPort(d.Host, strconv.Itoa(d.Port))
}

// ParseDest normalises an authority (a CONNECT target, a URL host or a Host
// header) into a Dest. An authority without a port gets defaultPort; with
// defaultPort <= 0 the port is required. Every host:port credproxy compares
// goes through here, so rules and requests cannot disagree on a spelling.
func ParseDest(authority string, defaultPort int) (Dest, error) {
	host, port, err := parseHostPort(authority)
	if err != nil {
		return Dest{}, fmt.Errorf("destination %q: %w", authority, err)
	}
	if port == 0 {
		if defaultPort <= 0 {
			return Dest{}, fmt.Errorf("destination %q: missing port", authority)
		}
		port = defaultPort
	}
	return Dest{Host: host, Port: port}, nil
}

// parseHostPort splits and normalises host[:port]; port is 0 when absent.
func parseHostPort(s string) (host string, port int, err error) {
	if s == "" {
		return "", 0, errors.New("empty host")
	}
	// "user@host" would make some parsers dial host and others userinfo.
	if i := strings.IndexAny(s, "@/?#\\"); i >= 0 {
		return "", 0, fmt.Errorf("unexpected %q: want host or host:port only", s[i])
	}
	hostPart, portPart, hasPort, err := splitPort(s)
	if err != nil {
		return "", 0, err
	}
	if hasPort {
		if port, err = parsePort(portPart); err != nil {
			return "", 0, err
		}
	}
	if strings.HasPrefix(hostPart, "[") {
		host, err = normaliseIPv6(hostPart[1 : len(hostPart)-1])
	} else {
		host, err = normaliseHost(hostPart)
	}
	return host, port, err
}

// splitPort separates a bracketed or plain host from an optional :port.
func splitPort(s string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, errors.New("missing ']' in IPv6 address")
		}
		rest := s[end+1:]
		if rest == "" {
			return s[:end+1], "", false, nil
		}
		if rest[0] != ':' {
			return "", "", false, fmt.Errorf("unexpected %q after IPv6 address", rest)
		}
		return s[:end+1], rest[1:], true, nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", false, nil
	case 1:
		i := strings.IndexByte(s, ':')
		return s[:i], s[i+1:], true, nil
	default:
		return "", "", false, errors.New("an IPv6 address must be in brackets, as in [::1]:443")
	}
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad port %q", s)
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 1-65535", n)
	}
	return n, nil
}

func normaliseIPv6(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return "", fmt.Errorf("bad IPv6 address %q", s)
	}
	if a.Zone() != "" {
		return "", fmt.Errorf("IPv6 zone not allowed in %q", s)
	}
	return a.String(), nil
}

// normaliseHost lower-cases an ASCII host name or IPv4 literal and drops one
// trailing dot: "Api.Example.COM." and "api.example.com" are one host.
func normaliseHost(s string) (string, error) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if s == "" {
		return "", errors.New("empty host")
	}
	// All-numeric names are no host names (no TLD is numeric), and resolvers
	// read some, like 127.1, as addresses: only canonical IPv4 is accepted.
	if looksIPv4(s) {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return s, nil
		}
		return "", fmt.Errorf("bad IPv4 address %q", s)
	}
	if len(s) > 253 {
		return "", errors.New("host name longer than 253 characters")
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", fmt.Errorf("empty label in host %q", s)
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return "", fmt.Errorf("bad character %q in host (want ASCII letters, digits, '-', '_' and '.'; use punycode for IDNs)", c)
		}
		if label++; label > 63 {
			return "", errors.New("host label longer than 63 characters")
		}
	}
	if label == 0 { // "a.." keeps a dot after the one trimmed
		return "", fmt.Errorf("empty label in host %q", s)
	}
	return s, nil
}

// looksIPv4 spares host names the cost of a failed netip.ParseAddr.
func looksIPv4(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// hostPattern is one compiled entry of a rule's hosts.
type hostPattern struct {
	host     string // exact host, or for a wildcard the suffix after "*."
	wildcard bool   // matches one or more labels below host, never host itself
	port     int    // 0: the default ports, 443 (CONNECT) and 80 (plain HTTP)
}

// parseHostPattern compiles api.example.com, *.example.com, with an optional
// :port, or an IP literal (IPv6 in brackets).
func parseHostPattern(s string) (hostPattern, error) {
	var p hostPattern
	rest := s
	if strings.HasPrefix(rest, "*.") {
		p.wildcard, rest = true, rest[2:]
	}
	if strings.Contains(rest, "*") {
		return p, errors.New("'*' is only allowed as a whole first label, as in *.example.com")
	}
	host, port, err := parseHostPort(rest)
	if err != nil {
		return p, err
	}
	if p.wildcard {
		if _, err := netip.ParseAddr(host); err == nil {
			return p, errors.New("a wildcard needs a host name, not an IP address")
		}
	}
	p.host, p.port = host, port
	return p, nil
}

func (p hostPattern) matches(d Dest) bool {
	if p.port == 0 {
		if d.Port != 443 && d.Port != 80 {
			return false
		}
	} else if d.Port != p.port {
		return false
	}
	if !p.wildcard {
		return d.Host == p.host
	}
	n := len(d.Host) - len(p.host)
	return n > 1 && d.Host[n-1] == '.' && d.Host[n:] == p.host
}

// loopback reports whether the pattern names only this machine: localhost,
// 127.0.0.0/8 or ::1. A wildcard never does (*.localhost is up to resolvers).
func (p hostPattern) loopback() bool {
	if p.wildcard {
		return false
	}
	if p.host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(p.host)
	return err == nil && a.Unmap().IsLoopback()
}
