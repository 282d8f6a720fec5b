package upstream

import (
	"net"

	"golang.org/x/sys/unix"
)

// linkCounters reads from the kernel how many bytes the peer has
// acknowledged and how many came from it on raw, and how many it holds
// not yet sent: progress that a queue of ours, a TLS record half read or a
// busy reader cannot fake (see Conn.moved). ok is false where raw is not a
// TCP socket.
func linkCounters(raw net.Conn) (acked, received uint64, notSent uint32, ok bool) {
	tc, isTCP := raw.(*net.TCPConn)
	if !isTCP {
		return 0, 0, 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, 0, false
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return 0, 0, 0, false
	}
	return info.Bytes_acked, info.Bytes_received, info.Notsent_bytes, true
}
