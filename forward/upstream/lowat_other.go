//go:build !linux && !darwin

package upstream

import "net"

// holdLittleUnsent: TCP_NOTSENT_LOWAT is set on Linux and macOS only.
func holdLittleUnsent(net.Conn) {}
