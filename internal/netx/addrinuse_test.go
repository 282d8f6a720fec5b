package netx

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

// A port another listener holds is reported as in use, through every
// wrapping net.Listen and callers add; other listen errors are not.
func TestAddrInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, inUse := net.Listen("tcp", busy.Addr().String())
	if inUse == nil {
		t.Fatalf("listening on %s twice succeeded", busy.Addr())
	}
	_, invalid := net.Listen("tcp", "127.0.0.1:99999")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"busy port", inUse, true},
		{"busy port, wrapped", fmt.Errorf("bind 127.0.0.1: %w", inUse), true},
		{"invalid port", invalid, false},
		{"other error", errors.New("address already in use"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AddrInUse(tc.err); got != tc.want {
				t.Fatalf("AddrInUse(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
