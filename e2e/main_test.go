// Package e2e runs kforward against a real local control plane
// (package e2e/cluster): kube-apiserver, controllers and kwok.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kforward/kforward/e2e/cluster"
)

var shared *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	c, err := cluster.Start(context.Background(), cluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start cluster:", err)
		return 1
	}
	defer c.Stop()
	shared = c
	defer func() {
		if built.path != "" {
			os.RemoveAll(filepath.Dir(built.path))
		}
	}()
	return m.Run()
}

func needCluster(t testing.TB) *cluster.Cluster {
	t.Helper()
	if shared == nil {
		t.Skip("end-to-end test: needs the local control plane (not run with -short)")
	}
	return shared
}
