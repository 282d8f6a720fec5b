// Package netem is a TCP proxy that gives a path the distance and width a
// laptop has to a cloud cluster's API server: a one-way delay, and a rate
// per direction with a bounded queue in front of it, like a home uplink's.
// Tests and make bench put it between a forwarder and the API server (the
// kubeconfig points at it; TLS passes through untouched).
//
// Each direction of each connection is a reader, which takes what the
// sender sends into the link's queue (and stops reading while the queue is
// full, so the sender's TCP backs up as it would behind a real
// bottleneck), and a writer, which lets each piece out no earlier than
// Delay after it was read and no faster than the rate. The proxy's own
// sockets keep small buffers, so that the queue is where the link says.
package netem

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Link is what a path does to the bytes that cross it.
type Link struct {
	Delay    time.Duration // one way, in each direction
	Up, Down int           // bytes per second client→server and server→client; 0 is unlimited
	Queue    int           // bytes waiting at each direction's bottleneck; 0 means 256 KiB
}

// Proxy listens on loopback and carries every connection to its target
// across the link. It owns its accept loop and the goroutines of every
// connection; Close ends them all.
type Proxy struct {
	target string
	link   Link
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	dark   chan struct{} // closed by Blackhole
	closed chan struct{} // closed by Close
	once   sync.Once
	count  int
}

// Start listens on a free loopback port and proxies to target.
func Start(target string, link Link) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if link.Queue <= 0 {
		link.Queue = 256 << 10
	}
	p := &Proxy{target: target, link: link, ln: ln, conns: map[net.Conn]struct{}{},
		dark: make(chan struct{}), closed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted is how many connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Blackhole stops every byte, on open connections and new ones alike, as a
// network that is gone: sockets stay open and nobody answers.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.dark:
	default:
		close(p.dark)
	}
}

// Close stops the proxy and closes every connection, and returns once
// every goroutine of the proxy has ended.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// track adds c to the open connections; false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		return false
	default:
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// smallBuffer is what the proxy's sockets hold: the link's queue, not the
// kernel's, decides how much waits.
const smallBuffer = 64 << 10

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	defer client.Close()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	p.mu.Lock()
	p.count++
	p.mu.Unlock()
	d, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	server := d.(*net.TCPConn)
	defer server.Close()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	for _, c := range []*net.TCPConn{client, server} {
		c.SetReadBuffer(smallBuffer)
		c.SetWriteBuffer(smallBuffer)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.carry(server, client, p.link.Up)
	}()
	go func() {
		defer wg.Done()
		p.carry(client, server, p.link.Down)
	}()
	wg.Wait()
}

// piece is what one read took, and when.
type piece struct {
	b  []byte
	at time.Time
}

// carry moves src's bytes to dst across one direction of the link; at
// src's end it half-closes dst, on an error it closes both.
func (p *Proxy) carry(dst, src *net.TCPConn, rate int) {
	size := 16 << 10
	if rate > 0 {
		size = max(1<<10, min(size, rate/100)) // about 10ms of the link per piece
	}
	queue := make(chan piece, max(1, p.link.Queue/size))
	done := make(chan struct{})
	go func() { // the writer: delay, then the rate
		defer close(done)
		next := time.Now()
		for pc := range queue {
			next = later(next, pc.at.Add(p.link.Delay))
			if !p.wait(next) {
				src.Close()
				return
			}
			if _, err := dst.Write(pc.b); err != nil {
				src.Close()
				return
			}
			if rate > 0 {
				next = next.Add(time.Duration(len(pc.b)) * time.Second / time.Duration(rate))
			}
		}
		dst.CloseWrite()
	}()
	for {
		if !p.wait(time.Time{}) {
			break
		}
		b := make([]byte, size)
		n, err := src.Read(b)
		if n > 0 {
			select {
			case queue <- piece{b[:n], time.Now()}:
			case <-done:
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(queue)
	<-done
}

// wait sleeps until at, and returns false if the proxy closes meanwhile; a
// blackholed proxy waits for its close.
func (p *Proxy) wait(at time.Time) bool {
	select {
	case <-p.dark:
		<-p.closed
		return false
	default:
	}
	d := time.Until(at)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return p.wait(time.Time{})
	case <-p.dark:
		<-p.closed
		return false
	case <-p.closed:
		return false
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
