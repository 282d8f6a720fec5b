//go:build !windows

package netx

import (
	"errors"
	"syscall"
)

// AddrInUse reports whether err says that a listen address is already in
// use.
func AddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
