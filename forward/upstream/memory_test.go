package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/spdystream"
	corev1 "k8s.io/api/core/v1"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/testutil"
)

// An idle tunnel keeps nothing of a burst: after megabytes both ways on
// two connections at once, the session waits for its next frame reading
// into its small buffer with no large one held, the socket beneath waits
// holding no buffer at all, and the writer holds no batch. Checked from
// inside the reads themselves (the reader's goroutine), not by timing.
func TestIdleTunnelHoldsNoLargeBuffers(t *testing.T) {
	const pairs, up, down = 2, 4 << 20, 8 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErrs := make(chan error, 2*pairs)
	accepted := make(chan net.Conn, 1)
	go func() { // the kubelet's side: each data stream takes the upload, then sends the download
		sc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- sc
		srv, err := spdystream.NewConnection(sc, true)
		if err != nil {
			serverErrs <- err
			return
		}
		srv.Serve(func(s *spdystream.Stream) { // until sc is closed
			s.SendReply(http.Header{}, false)
			if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
				s.Close() // no error to report
				return
			}
			go func() {
				n, err := io.Copy(io.Discard, s)
				if err == nil && n != up {
					err = fmt.Errorf("server got %d bytes, want %d", n, up)
				}
				for sent := 0; err == nil && sent < down; sent += 32 << 10 {
					_, err = s.Write(make([]byte, 32<<10)) // the kubelet's frames: io.Copy's
				}
				s.Close()
				serverErrs <- err
			}()
		})
	}()

	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if sc := <-accepted; sc != nil {
		defer sc.Close()
	}
	sock := &watchedSocket{TCPConn: tcp.(*net.TCPConn)}
	bc := newBufConn(sock)
	sock.bc = bc
	frames := &watchedReads{bufConn: bc}
	c := newConn(frames, tcp, bc, config.SPDY, Options{})
	frames.conn.Store(c)
	defer c.Close(errors.New("test over"))

	var wg sync.WaitGroup
	for range pairs {
		local, err := localPair()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := c.Forward(local[1], 80, 5*time.Second, &Bytes{}); err != nil {
				t.Errorf("Forward: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			defer local[0].Close()
			if _, err := local[0].Write(make([]byte, up)); err != nil {
				t.Errorf("upload: %v", err)
				return
			}
			local[0].(*net.TCPConn).CloseWrite()
			if n, err := io.Copy(io.Discard, local[0]); err != nil || n != down {
				t.Errorf("download: %d bytes, %v; want %d", n, err, down)
			}
		}()
	}
	wg.Wait()
	for range pairs {
		if err := <-serverErrs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Ping(t.Context(), 5*time.Second); err != nil { // everything before its answer has been read
		t.Fatal(err)
	}

	testutil.Eventually(t, 5*time.Second, "the session waiting for its next frame", func() bool {
		frames.mu.Lock()
		defer frames.mu.Unlock()
		return frames.last.empty
	})
	testutil.Eventually(t, 5*time.Second, "the socket beneath waiting", func() bool {
		sock.mu.Lock()
		defer sock.mu.Unlock()
		return sock.waiting
	})
	frames.mu.Lock()
	if !frames.sawLarge {
		t.Error("the burst never read into a large buffer: the test did not test")
	}
	if frames.bad != "" {
		t.Errorf("the session read with nothing buffered %s", frames.bad)
	}
	if frames.last.large || frames.last.size > smallReadSize {
		t.Errorf("the idle session waits reading into %d bytes, large buffer held: %v", frames.last.size, frames.last.large)
	}
	frames.mu.Unlock()
	sock.mu.Lock()
	if sock.waits == 0 || sock.heldWaits != 0 {
		t.Errorf("the socket beneath waited %d times, %d of them holding a buffer; want some, none", sock.waits, sock.heldWaits)
	}
	sock.mu.Unlock()
	c.w.mu.Lock()
	if c.w.pending != nil || c.w.spare != nil {
		t.Errorf("the idle writer holds %d and %d bytes of batch", cap(c.w.pending), cap(c.w.spare))
	}
	c.w.mu.Unlock()
	bc.mu.Lock()
	if bc.out != nil {
		t.Errorf("bufConn holds a batch of %d bytes", cap(bc.out))
	}
	bc.mu.Unlock()
}

func localPair() ([2]net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return [2]net.Conn{}, err
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return [2]net.Conn{}, err
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		return [2]net.Conn{}, err
	}
	return [2]net.Conn{a, b}, nil
}

// watchedReads is the session's connection; it looks at the session's
// frame reader each time the reader goroutine reads (in that goroutine).
type watchedReads struct {
	*bufConn
	conn atomic.Pointer[Conn]

	mu       sync.Mutex
	last     readSeen
	sawLarge bool
	bad      string // the first read with nothing buffered that was not into small
}

type readSeen struct {
	empty bool // nothing was buffered: this read may wait
	large bool // a large buffer was held
	size  int
}

func (w *watchedReads) Read(p []byte) (int, error) {
	if c := w.conn.Load(); c != nil {
		in := &c.in
		seen := readSeen{empty: in.r == in.w, large: in.large != nil, size: len(p)}
		w.mu.Lock()
		w.last = seen
		w.sawLarge = w.sawLarge || seen.large
		if seen.empty && (seen.large || seen.size > smallReadSize) && w.bad == "" {
			w.bad = fmt.Sprintf("into %d bytes, large buffer held: %v", seen.size, seen.large)
		}
		w.mu.Unlock()
	}
	return w.bufConn.Read(p)
}

// watchedSocket is the TCP connection beneath bufConn; each time bufConn
// is about to wait for the socket, it records whether bufConn holds a
// buffer.
type watchedSocket struct {
	*net.TCPConn
	bc *bufConn

	mu        sync.Mutex
	waiting   bool // the last thing bufConn did was to go and wait
	waits     int
	heldWaits int
}

func (s *watchedSocket) SyscallConn() (syscall.RawConn, error) {
	rc, err := s.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return watchedRaw{RawConn: rc, s: s}, nil
}

type watchedRaw struct {
	syscall.RawConn
	s *watchedSocket
}

func (r watchedRaw) Read(f func(uintptr) bool) error {
	return r.RawConn.Read(func(fd uintptr) bool {
		done := f(fd)
		r.s.mu.Lock()
		r.s.waiting = !done
		if !done {
			r.s.waits++
			if r.s.bc.in != nil {
				r.s.heldWaits++
			}
		}
		r.s.mu.Unlock()
		return done
	})
}

// plainConn hides the socket: bufConn reads it with readPlain, as where
// the socket cannot be read directly.
type plainConn struct {
	net.Conn
	bc    *bufConn
	reads []plainRead // the test's goroutine reads: no lock
}

type plainRead struct {
	size int  // of the buffer read into
	held bool // bufConn held a large buffer
}

func (c *plainConn) Read(p []byte) (int, error) {
	c.reads = append(c.reads, plainRead{len(p), c.bc.in != nil})
	return c.Conn.Read(p)
}

// Where bufConn cannot read the socket itself, every byte still arrives
// in order, large reads are used while data flows, and a read after one
// that did not fill its buffer (the burst is over) goes straight into the
// caller's buffer, holding none.
func TestBufConnPlainReads(t *testing.T) {
	local, err := localPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local[0].Close()
	defer local[1].Close()
	const size = 4<<20 + 1000
	pattern := func(i int) byte { return byte(i % 251) }
	wrote := make(chan error, 1)
	go func() {
		b := make([]byte, size)
		for i := range b {
			b[i] = pattern(i)
		}
		_, err := local[0].Write(b)
		wrote <- err
	}()
	pc := &plainConn{Conn: local[1]}
	bc := newBufConn(pc)
	pc.bc = bc
	if bc.rc != nil {
		t.Fatal("bufConn found a socket behind plainConn")
	}
	p := make([]byte, 17<<10) // what TLS asks for: a record and a little
	got := 0
	for got < size {
		n, err := bc.Read(p)
		for i := range n {
			if p[i] != pattern(got+i) {
				t.Fatalf("byte %d is %d, want %d", got+i, p[i], pattern(got+i))
			}
		}
		got += n
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	large := false
	for _, r := range pc.reads {
		large = large || r.size == readBufferSize
	}
	if !large {
		t.Errorf("reads %v: none into a large buffer during the burst", pc.reads)
	}
	// After the burst. A read that filled its buffer makes the next one
	// large too; one that did not ends the burst.
	readOne := func(b byte) {
		t.Helper()
		local[0].Write([]byte{b})
		if n, err := bc.Read(p); n != 1 || err != nil || p[0] != b {
			t.Fatalf("read %q, %v; want %q", p[:n], err, b)
		}
	}
	if bc.busy {
		readOne('x') // into a large buffer, which it does not fill
		if bc.busy {
			t.Fatal("a 1-byte read filled the large buffer")
		}
	}
	readOne('y')
	if last := pc.reads[len(pc.reads)-1]; last.size != len(p) || last.held {
		t.Errorf("the read after the burst was into %d bytes, a large buffer held: %v; want the caller's %d, none", last.size, last.held, len(p))
	}
	local[0].Close()
	if n, err := bc.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want EOF", n, err)
	}
	if bc.in != nil {
		t.Error("bufConn holds a buffer at the end of the stream")
	}
}

// The free list gives back what it was given, and keeps no more than
// maxFreeBuffers of them.
func TestBufferPoolBounded(t *testing.T) {
	var p bufferPool
	b := p.Get()
	p.Put(b)
	if got := p.Get(); got != b {
		t.Fatal("a buffer given back was not the next one taken")
	}
	for range maxFreeBuffers + 5 {
		p.Put(new([readBufferSize]byte))
	}
	if len(p.free) != maxFreeBuffers {
		t.Fatalf("the free list keeps %d buffers, want %d", len(p.free), maxFreeBuffers)
	}
}
