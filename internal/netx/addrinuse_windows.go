package netx

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// AddrInUse reports whether err says that a listen address is already in
// use. Windows reports WSAEADDRINUSE, which syscall.EADDRINUSE (an errno
// Go invents there) does not match.
func AddrInUse(err error) bool {
	return errors.Is(err, windows.WSAEADDRINUSE) || errors.Is(err, syscall.EADDRINUSE)
}
