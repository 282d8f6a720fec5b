package netx

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/windows"
)

// What net.Listen returns on Windows for a busy port, built by hand so
// that the check does not depend on the test's host.
func TestAddrInUseWSA(t *testing.T) {
	err := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", windows.WSAEADDRINUSE)}
	if !AddrInUse(err) {
		t.Fatalf("AddrInUse(%v) = false, want true", err)
	}
}
