//go:build !linux

package upstream

import "syscall"

// awaitReset does not watch the socket here: elsewhere the poller cannot
// be relied on to wait for a reset after EOF without spinning, so a client
// that resets after its half-close is noticed when the pod next writes.
func awaitReset(syscall.RawConn) error { return nil }
