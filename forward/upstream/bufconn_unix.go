//go:build unix

package upstream

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func socketOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readSocket reads whatever the socket holds into a large buffer, and
// waits for the socket, when it holds nothing, without one: the buffer
// goes back to the pool before the wait (the read that finds the socket
// empty is the one Go's own Read makes before it waits, too).
func (c *bufConn) readSocket() error {
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		if c.in == nil {
			c.in = readBuffers.Get()
		}
		for {
			n, rerr = unix.Read(int(fd), c.in[:])
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			c.drop()
			return false // wait for the socket, then call again
		}
		return true
	})
	switch {
	case err == nil && rerr == nil && n > 0:
		c.r, c.w = 0, n
		return nil
	case err == nil && rerr == nil:
		err = io.EOF
	case err == nil:
		err = os.NewSyscallError("read", rerr)
	}
	c.drop()
	if err == io.EOF {
		return err
	}
	// As net.Conn's Read reports it: a closed connection is net.ErrClosed,
	// a deadline a timeout.
	return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
