//go:build unix

package upstream

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// maxIovecs is IOV_MAX on Linux and the BSDs: writev refuses more.
const maxIovecs = 1024

// tryWrite writes as much of bufs as the socket takes without waiting, in
// one writev, and returns how much that was. The reader delivers most pod
// data this way, straight from its read buffer: no copy, no hand-off to
// another goroutine, and one syscall for every frame of the stream that
// one read brought. A failed write is left for the drain goroutine to meet
// again and report.
func tryWrite(rc syscall.RawConn, bufs [][]byte) int {
	bufs = bufs[:min(len(bufs), maxIovecs)]
	n := 0
	rc.Write(func(fd uintptr) bool {
		m, err := unix.Writev(int(fd), bufs)
		if err == nil && m > 0 {
			n = m
		}
		return true // never wait for the socket: the caller queues the rest
	})
	return n
}
