package upstream

import (
	"os"

	"golang.org/x/sys/unix"
)

// punchHole gives the disk space of f's bytes from..to back, keeping the
// file's size and offsets, and returns where the next hole starts.
func punchHole(f *os.File, from, to int64) int64 {
	to &^= 4<<10 - 1 // whole blocks
	if to <= from {
		return from
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return from
	}
	rc.Control(func(fd uintptr) {
		err = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, to-from)
	})
	if err != nil {
		return from
	}
	return to
}
