//go:build linux || darwin

package upstream

import (
	"net"

	"golang.org/x/sys/unix"
)

// notSentLowat is how much unsent data the kernel may hold for the tunnel
// (TCP_NOTSENT_LOWAT, as HTTP/2 servers set it). Without it the kernel
// takes megabytes, on a fast local link as much as its send buffer grows
// to, and a PING or a new stream written after an upload waits behind all
// of it however the writer orders its own queue; with it, what is queued
// stays in the writer, which puts control frames first.
const notSentLowat = 128 << 10

// holdLittleUnsent sets TCP_NOTSENT_LOWAT on raw if it is a TCP socket.
func holdLittleUnsent(raw net.Conn) {
	tc, ok := raw.(*net.TCPConn)
	if !ok {
		return
	}
	if rc, err := tc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
		})
	}
}
