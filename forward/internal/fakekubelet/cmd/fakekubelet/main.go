// Command fakekubelet runs package fakekubelet's server for package
// forward's tests: commands on stdin, replies on file descriptor 3.
package main

import (
	"fmt"
	"os"

	"github.com/kforward/kforward/forward/internal/fakekubelet"
)

func main() {
	replies := os.NewFile(3, "replies")
	if replies == nil {
		fmt.Fprintln(os.Stderr, "fakekubelet: no reply pipe on file descriptor 3")
		os.Exit(2)
	}
	if err := fakekubelet.Run(os.Stdin, replies); err != nil {
		fmt.Fprintln(os.Stderr, "fakekubelet:", err)
		os.Exit(1)
	}
}
