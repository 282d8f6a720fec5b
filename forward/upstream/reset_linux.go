package upstream

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// awaitReset waits, after a local client's half-close, for the error that
// a later reset leaves on its socket, and returns it; nil when the
// connection was closed on our side first. A socket that has read its EOF
// gives no further reads to notice a reset with, and the pod may never
// write again: without this, the pair would stay open until it did.
// Waiting costs nothing: the poller wakes this only on the socket's next
// event (epoll is edge-triggered), which after the client's FIN is its
// reset or our own close.
func awaitReset(rc syscall.RawConn) error {
	var sockErr error
	err := rc.Read(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			sockErr = err
		case n != 0:
			sockErr = syscall.Errno(n)
		}
		return sockErr != nil
	})
	if err != nil {
		return nil // closed by finish
	}
	return sockErr
}
