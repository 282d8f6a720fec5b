package status

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// connRefused reports whether err says that nothing listens at the
// address dialled. Windows reports WSAECONNREFUSED, which
// syscall.ECONNREFUSED (an errno Go invents there) does not match.
func connRefused(err error) bool {
	return errors.Is(err, windows.WSAECONNREFUSED) || errors.Is(err, syscall.ECONNREFUSED)
}
