//go:build unix

package upstream

import "syscall"

// tryWrite writes as much of b as the socket takes without waiting and
// returns how much that was. The reader delivers most pod data this way,
// straight from its read buffer: no copy, and no hand-off to another
// goroutine. A failed write is left for the drain goroutine to meet again
// and report.
func tryWrite(rc syscall.RawConn, b []byte) int {
	n := 0
	rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			if err != nil || m <= 0 {
				break
			}
		}
		return true // never wait for the socket: the caller queues the rest
	})
	return n
}
