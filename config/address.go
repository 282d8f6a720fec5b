package config

import (
	"fmt"
	"net/netip"
)

// ParseAddress resolves a listen address from the file: an IP address, or
// "localhost", which means both 127.0.0.1 and ::1 as in kubectl.
func ParseAddress(s string) ([]string, error) {
	if s == "localhost" {
		return []string{"127.0.0.1", "::1"}, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("invalid address %q: want an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost", s)
	}
	return []string{ip.Unmap().String()}, nil
}

// bind is one local address:port some forward listens on.
type bind struct {
	addr    string
	port    int
	forward string
	at      Pos
}

// conflict finds an earlier bind that b would collide with: the same port on
// the same address, or on a wildcard address that covers the other.
func conflict(binds []bind, b bind) (bind, bool) {
	for _, o := range binds {
		if o.port == b.port && overlap(o.addr, b.addr) {
			return o, true
		}
	}
	return bind{}, false
}

func overlap(a, b string) bool {
	if a == b {
		return true
	}
	x, y := netip.MustParseAddr(a), netip.MustParseAddr(b)
	// "::" listens on IPv4 too on dual-stack hosts, so it covers every address.
	if x == netip.IPv6Unspecified() || y == netip.IPv6Unspecified() {
		return true
	}
	if x == netip.IPv4Unspecified() && y.Is4() || y == netip.IPv4Unspecified() && x.Is4() {
		return true
	}
	return false
}
