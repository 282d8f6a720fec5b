package forward

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/netx"
)

type listener struct {
	ln   net.Listener
	port config.Port
}

func closeAll(lns []listener) {
	for _, l := range lns {
		l.ln.Close()
	}
}

// freePortTries bounds how many ports a free-port mapping tries when the
// port chosen on its first address is taken on another.
const freePortTries = 16

// listen binds every address × port. A port that cannot be bound fails the
// forward (shown in its status) and is retried with backoff; it is never
// moved to another port. A free port (0) is chosen once, by the first
// address that binds it, and asked of the others; if another address has
// it taken, a new port is chosen for them all.
//
// localhost (127.0.0.1 and ::1) may be bound in part, as kubectl does: a
// host without IPv6 loopback, common in containers and CI, cannot bind ::1
// at all, and that must not keep the forward down. A loopback address that
// cannot be bound for any reason but "in use" is then left out, with one
// warning; a port in use on either is still an error.
func (f *Forward) listen(ctx context.Context) ([]listener, error) {
	b := f.newBackoff()
	for {
		lns, chosen, skipped, err := f.bind()
		if err == nil {
			f.mu.Lock()
			f.addrs = nil
			for _, l := range lns {
				f.addrs = append(f.addrs, l.ln.Addr().String())
			}
			f.chosen = chosen
			f.mu.Unlock()
			for _, s := range skipped {
				f.log.Warn("not listening on "+s.addr+": localhost is bound in part", "err", s.err)
			}
			for _, l := range lns {
				if where, ok := beyondLoopback(l.ln.Addr()); ok {
					f.log.Warn("reachable from other machines on " + where)
				}
			}
			return lns, nil
		}
		f.fail(Failed, err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(f.retryIn(b.NextBackOff())):
		}
	}
}

// skippedAddr is a loopback address left out of a partial bind of localhost.
type skippedAddr struct {
	addr string
	err  error // the first reason
}

// bind makes one attempt at binding every port mapping on every address:
// the listeners, the local port of each mapping, and the loopback
// addresses left out. On error nothing stays bound.
func (f *Forward) bind() ([]listener, []int, []skippedAddr, error) {
	var (
		lns     []listener
		chosen  []int
		skipped []skippedAddr
		errs    []string
	)
	for _, p := range f.spec.Ports {
		var (
			got   []listener
			port  int
			left  map[string]error
			perrs []string
		)
		for range freePortTries {
			var taken bool
			got, port, left, perrs, taken = f.bindPort(p)
			if !taken {
				break
			}
		}
		lns = append(lns, got...)
		chosen = append(chosen, port)
		errs = append(errs, perrs...)
		for _, addr := range f.spec.Addresses {
			if err, ok := left[addr]; ok && !slices.ContainsFunc(skipped, func(s skippedAddr) bool { return s.addr == addr }) {
				skipped = append(skipped, skippedAddr{addr, err})
			}
		}
	}
	if len(errs) > 0 {
		closeAll(lns)
		return nil, nil, nil, errors.New(strings.Join(errs, "; "))
	}
	return lns, chosen, skipped, nil
}

// bindPort binds one port mapping on every address and returns the
// listeners and the local port, or why not: skipped holds the loopback
// addresses a partial bind of localhost leaves out (with why), errs the
// rest. taken means that a free port chosen on one address is in use on
// another: nothing is left bound, and the caller may try a new port.
func (f *Forward) bindPort(p config.Port) (lns []listener, port int, skipped map[string]error, errs []string, taken bool) {
	port = p.Local
	failed := map[string]error{}
	var order []string
	for _, addr := range f.spec.Addresses {
		hostport := net.JoinHostPort(addr, strconv.Itoa(port))
		ln, err := f.listenTCP("tcp", hostport)
		if err != nil {
			if netx.AddrInUse(err) {
				taken = taken || (p.Local == 0 && port != 0)
				err = &inUseError{hostport}
			}
			failed[addr] = err
			order = append(order, addr)
			continue
		}
		if port == 0 {
			port = ln.Addr().(*net.TCPAddr).Port
		}
		lns = append(lns, listener{ln, p})
	}
	skipped = map[string]error{}
	for _, addr := range order {
		err := failed[addr]
		var inUse *inUseError
		if partOfLocalhost(f.spec.Addresses, addr, failed) && !errors.As(err, &inUse) {
			skipped[addr] = err
			continue
		}
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		closeAll(lns)
		return nil, 0, nil, errs, taken
	}
	return lns, port, skipped, nil, false
}

// inUseError is a local address and port that something else listens on.
type inUseError struct{ hostport string }

func (e *inUseError) Error() string { return e.hostport + " is already in use" }

// partOfLocalhost reports whether addr may be left out of a bind: it is
// one of the two loopback addresses of localhost, both are listed, and the
// other one did not fail.
func partOfLocalhost(addrs []string, addr string, failed map[string]error) bool {
	other := map[string]string{"127.0.0.1": "::1", "::1": "127.0.0.1"}[addr]
	if other == "" || !slices.Contains(addrs, other) {
		return false
	}
	_, otherFailed := failed[other]
	return !otherFailed
}

// beyondLoopback reports whether a listener's address takes connections
// from other machines, and how to say where: ":8080" for every interface,
// "192.168.1.5:8080" for one.
func beyondLoopback(a net.Addr) (string, bool) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP.IsLoopback() {
		return "", false
	}
	if tcp.IP.IsUnspecified() {
		return ":" + strconv.Itoa(tcp.Port), true
	}
	return tcp.String(), true
}
