//go:build !windows

package forward

import (
	"errors"
	"syscall"
)

// acceptAgain reports whether an accept error passes once resources are
// back: out of file descriptors (the process's, the system's) or buffers,
// or a client that gave up before it was accepted.
func acceptAgain(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ECONNABORTED)
}
