package kube

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A kubeconfig that never ends (a device, a FIFO) or is huge is refused at
// once, without reading it: `kubeconfig: /dev/zero` once grew kforward by
// gigabytes a second, in a read no signal could stop.
func TestKubeconfigReadWithLimit(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A writer that never finishes: a read of the FIFO would wait forever.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteString("apiVersion: v1\nkind: Config\n")

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxKubeconfigSize+1); err != nil { // sparse: costs no disk
		t.Fatal(err)
	}

	for _, tc := range []struct{ path, want string }{
		{fifo, "is not a regular file"},
		{big, "is larger than 16 MiB"},
	} {
		for name, connect := range map[string]func() error{
			"Connect": func() error { _, err := Connect(tc.path, ""); return err },
			"Read":    func() error { _, err := ReadKubeconfig(tc.path); return err },
			"KUBECONFIG": func() error {
				t.Setenv("KUBECONFIG", tc.path)
				_, err := Connect("", "")
				return err
			},
		} {
			done := make(chan error, 1)
			go func() { done <- connect() }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("%s(%s): got %v, want an error naming it that says %q", name, filepath.Base(tc.path), err, tc.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s(%s) still reading after 20s", name, filepath.Base(tc.path))
			}
		}
	}
}
