//go:build !windows

package status

import (
	"errors"
	"syscall"
)

// connRefused reports whether err says that nothing listens at the
// address dialled.
func connRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
