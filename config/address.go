package config

import (
	"cmp"
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
	seq     int // order taken: of several collisions, the earliest is reported
}

// binds holds the local address:port pairs taken so far, indexed by port so
// that finding a collision costs the same however many there are.
type binds struct {
	ports map[int]*portBinds
	n     int
}

// portBinds are the binds on one port.
type portBinds struct {
	exact         map[string]*bind // by address
	first, first4 *bind            // the earliest on any address, on an IPv4 one
	any4, any6    *bind            // the earliest on 0.0.0.0, on ::
}

// add takes b unless it collides with an earlier bind: the same port on the
// same address, or on a wildcard address that covers the other. "::"
// listens on IPv4 too on dual-stack hosts, so it covers every address;
// "0.0.0.0" covers every IPv4 address.
func (bs *binds) add(b bind) (other bind, conflict bool) {
	if bs.ports == nil {
		bs.ports = map[int]*portBinds{}
	}
	p := bs.ports[b.port]
	if p == nil {
		p = &portBinds{exact: map[string]*bind{}}
		bs.ports[b.port] = p
	}
	ip := netip.MustParseAddr(b.addr)
	var found *bind
	for _, c := range [...]*bind{p.exact[b.addr], p.any6, p.cover(ip)} {
		if c != nil && (found == nil || c.seq < found.seq) {
			found = c
		}
	}
	if found != nil {
		return *found, true
	}
	b.seq = bs.n
	bs.n++
	nb := &b
	p.exact[b.addr] = nb
	p.first = cmp.Or(p.first, nb)
	if ip.Is4() {
		p.first4 = cmp.Or(p.first4, nb)
	}
	switch ip {
	case netip.IPv4Unspecified():
		p.any4 = cmp.Or(p.any4, nb)
	case netip.IPv6Unspecified():
		p.any6 = cmp.Or(p.any6, nb)
	}
	return bind{}, false
}

// cover is the earliest bind on the port that a bind on ip would overlap
// through a wildcard, other than :: (which add checks for every address).
func (p *portBinds) cover(ip netip.Addr) *bind {
	switch {
	case ip == netip.IPv6Unspecified():
		return p.first
	case ip == netip.IPv4Unspecified():
		return p.first4
	case ip.Is4():
		return p.any4
	}
	return nil
}
