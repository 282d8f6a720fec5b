package forward

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// acceptAgain reports whether an accept error passes once resources are
// back: out of sockets or buffers, or a client that gave up before it was
// accepted. Windows reports WSAEMFILE, WSAENOBUFS and WSAECONNABORTED,
// which syscall's errnos of those names (invented there) do not match.
func acceptAgain(err error) bool {
	return errors.Is(err, windows.WSAEMFILE) || errors.Is(err, windows.WSAENOBUFS) ||
		errors.Is(err, windows.WSAECONNABORTED) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ECONNABORTED)
}
