package upstream

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// bufConn is the TCP connection beneath TLS, read and written in large
// pieces. TLS reads the socket about a record (16 KiB) at a time and writes
// each record with a syscall of its own; syscalls are most of a
// forwarder's work. Through bufConn a read takes whatever the socket holds,
// up to readBufferSize, and the session's writer holds the writes of each
// batch of frames and releases them in one syscall. Writes outside a batch
// (the TLS handshake, the upgrade, a WebSocket pong) go straight through.
//
// Neither side keeps a buffer while the connection is idle. A read waits
// for the socket holding nothing and takes a large buffer from readBuffers
// only to read what is there (readSocket); the buffer goes back when TLS
// has taken all of it. A batch is gathered in a buffer from batches.
type bufConn struct {
	net.Conn
	rc syscall.RawConn // nil where the socket cannot be read directly: see readPlain

	// The read side is TLS's, which reads one call at a time.
	in   *[readBufferSize]byte // what the socket gave, in[r:w] not yet read
	r, w int
	busy bool // readPlain: the last read filled its buffer

	mu      sync.Mutex
	holding bool
	out     []byte
}

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, rc: socketOf(c)}
}

func (c *bufConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if c.rc == nil {
			return c.readPlain(p)
		}
		if err := c.readSocket(); err != nil {
			return 0, err
		}
	}
	return c.take(p), nil
}

// take copies what is buffered into p; the buffer goes back to the pool
// once it has all been taken.
func (c *bufConn) take(p []byte) int {
	n := copy(p, c.in[c.r:c.w])
	c.r += n
	if c.r == c.w {
		c.drop()
	}
	return n
}

func (c *bufConn) drop() {
	if c.in != nil {
		readBuffers.Put(c.in)
		c.in = nil
	}
	c.r, c.w = 0, 0
}

// readPlain reads where the socket is not ours to read: straight into p
// while reads are small, since a read that waits must not hold a large
// buffer; once a read fills p, data is flowing, and reads go through a
// large buffer until one does not fill it.
func (c *bufConn) readPlain(p []byte) (int, error) {
	if !c.busy {
		n, err := c.Conn.Read(p)
		c.busy = n == len(p)
		return n, err
	}
	c.in = readBuffers.Get()
	n, err := c.Conn.Read(c.in[:])
	c.busy = n == len(c.in)
	c.w = n
	if n == 0 {
		c.drop()
		return 0, err
	}
	return c.take(p), nil // an error comes again with the next read
}

func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	if c.out == nil {
		c.out = getBatch()
	}
	c.out = append(c.out, p...)
	return len(p), nil
}

func (c *bufConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

func (c *bufConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if len(c.out) == 0 {
		return nil
	}
	// gorilla sets a deadline for its control frames (a pong) and leaves
	// it: a batch must not inherit it.
	c.Conn.SetWriteDeadline(time.Time{})
	_, err := c.Conn.Write(c.out)
	putBatch(c.out)
	c.out = nil
	return err
}
