//go:build !unix

package upstream

import (
	"net"
	"syscall"
)

// socketOf gives no socket here: bufConn reads with readPlain.
func socketOf(net.Conn) syscall.RawConn { return nil }

func (c *bufConn) readSocket() error { panic("unreachable") }
