// Command kforward keeps every port-forward in a forwards.yaml alive.
package main

import (
	"context"
	"os"
	"runtime"
)

func main() {
	// A forwarder's work is syscalls, not computation: with more than one
	// P, the Go scheduler wakes and spins idle threads at every arrival of
	// data, which on a 2-core machine cost a third more CPU per GiB and
	// took that CPU from the API server and the client (see
	// forward/upstream's package doc). One P carries a few hundred MB/s;
	// GOMAXPROCS in the environment still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
