package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from
// <linux/netfilter_ipv6/ip6_tables.h>, which x/sys/unix does not name; it
// has the same value as SO_ORIGINAL_DST, at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst is where a connection redirected by iptables (nat REDIRECT)
// was going before it was redirected, read from conntrack with
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6). On a connection
// that was not redirected it is the connection's own local address.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a TCP connection", c)
	}
	local, ok := addrPort(tc.LocalAddr())
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: no local address")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var dst netip.AddrPort
	var opErr error
	err = raw.Control(func(fd uintptr) {
		if local.Addr().Is4() {
			var m *unix.IPv6Mreq // 16 bytes: room for a struct sockaddr_in
			if m, opErr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); opErr == nil {
				sa := m.Multiaddr // family (2 bytes), port (big endian), address
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
			}
			return
		}
		var info *unix.IPv6MTUInfo // starts with a struct sockaddr_in6
		if info, opErr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst); opErr == nil {
			var port [2]byte // sin6_port: network byte order in memory
			binary.NativeEndian.PutUint16(port[:], info.Addr.Port)
			dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr).Unmap(), binary.BigEndian.Uint16(port[:]))
		}
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (SO_ORIGINAL_DST): %w", err)
	}
	return dst, nil
}
