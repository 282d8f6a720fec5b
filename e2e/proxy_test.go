package e2e

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// faultProxy is a TCP proxy between kforward and the API server that a test
// breaks the way networks break:
//
//   - Blackhole: no byte passes any more on any open connection, and new
//     connections are accepted but pass nothing either, as when a VPN drops
//     or Wi-Fi is lost: sockets stay open, nobody answers.
//   - Restore: new connections pass again. Those that were blackholed stay
//     silent for good: the network they used is gone (the VPN came back
//     with a new session, the laptop joined another network), and only
//     their ends' own timeouts can end them.
//   - Reset: every open connection is closed with a reset on both sides, as
//     a NAT or firewall that forgot them does.
//   - Refuse: for a while every new connection is reset as soon as it is
//     accepted, as a load balancer with no healthy backend does.
//
// It owns its accept loop and two copiers per connection; Close ends them.
type faultProxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every connection's copiers

	mu          sync.Mutex
	conns       map[*proxyConn]struct{}
	dark        bool      // blackholed: connections opened now pass nothing, ever
	refuseUntil time.Time // new connections are reset until then
	closed      bool
	accepted    int // connections accepted
	refused     int // connections reset on accept
}

// proxyConn is one client connection and, unless it was accepted in the
// dark, its connection to the target.
type proxyConn struct {
	client, server *net.TCPConn // server is nil for a connection accepted in the dark
	half           int          // directions that have ended cleanly; guarded by faultProxy.mu
	held           bool         // blackholed: passes nothing until closed; guarded by faultProxy.mu
	done           chan struct{}
	once           sync.Once
}

// close closes both sockets; with reset, so that each peer gets a RST
// rather than a FIN (SO_LINGER 0).
func (pc *proxyConn) close(reset bool) {
	pc.once.Do(func() {
		for _, c := range []*net.TCPConn{pc.client, pc.server} {
			if c == nil {
				continue
			}
			if reset {
				c.SetLinger(0)
			}
			c.Close()
		}
		close(pc.done)
	})
}

// newFaultProxy listens on a free loopback port and forwards every
// connection to target until the test ends.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.accept()
	}()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address the proxy listens on.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		client := c.(*net.TCPConn)
		p.mu.Lock()
		if time.Now().Before(p.refuseUntil) {
			p.refused++
			p.mu.Unlock()
			client.SetLinger(0)
			client.Close()
			continue
		}
		p.accepted++
		dark := p.dark
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.serve(client, dark)
		}()
	}
}

// serve carries one client connection: it dials the target (unless the
// connection came in the dark) and copies both ways until the connection
// ends.
func (p *faultProxy) serve(client *net.TCPConn, dark bool) {
	var server *net.TCPConn
	if !dark {
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil { // the target refused: so does the proxy
			client.SetLinger(0)
			client.Close()
			return
		}
		server = s.(*net.TCPConn)
	}
	pc := &proxyConn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.close(false)
		return
	}
	pc.held = p.dark || server == nil
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	if server == nil {
		<-pc.done // accepted in the dark: silent until reset or the proxy closes
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pipe(pc, server, client)
	}()
	go func() {
		defer wg.Done()
		p.pipe(pc, client, server)
	}()
	wg.Wait()
}

func (p *faultProxy) isHeld(pc *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pc.held
}

// pipe copies src to dst. A clean end is passed on as a half-close, and
// both sockets close once both directions have ended; an error resets both.
// A held connection passes nothing, its end included.
func (p *faultProxy) pipe(pc *proxyConn, dst, src *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.isHeld(pc) {
			<-pc.done
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				pc.close(true)
				return
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			dst.CloseWrite()
			p.mu.Lock()
			pc.half++
			both := pc.half == 2
			p.mu.Unlock()
			if both {
				pc.close(false)
			}
			return
		case err != nil:
			pc.close(true)
			return
		}
	}
}

// Blackhole stops every byte on every open connection and on every
// connection accepted until Restore.
func (p *faultProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dark = true
	for pc := range p.conns {
		pc.held = true
	}
}

// Reset closes every open connection with a reset on both sides.
func (p *faultProxy) Reset() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close(true)
	}
}

// Refuse resets every connection accepted in the next d.
func (p *faultProxy) Refuse(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuseUntil = time.Now().Add(d)
}

// Restore lets new connections through again. Blackholed connections stay
// silent (see faultProxy).
func (p *faultProxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dark = false
	p.refuseUntil = time.Time{}
}

// Counts returns how many connections were accepted and how many refused.
func (p *faultProxy) Counts() (accepted, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.refused
}

// Close stops accepting, closes every connection and returns once every
// goroutine of the proxy has ended. It is safe to call more than once.
func (p *faultProxy) Close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, pc := range conns {
		pc.close(false)
	}
	p.wg.Wait()
}

// proxiedKubeconfig writes a copy of kubeconfig whose clusters are reached
// through addr. The API server's certificate is for 127.0.0.1, which the
// proxy listens on too, so TLS still verifies.
func proxiedKubeconfig(t testing.TB, kubeconfig, addr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
