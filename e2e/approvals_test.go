package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// The tests write their forwards files under the temporary directory, and
// most name the test cluster's kubeconfigs there: files this suite writes
// itself. kforward would wait for `kforward allow` on each (see
// safety_test.go, which tests exactly that with a config directory of its
// own). So the suite runs, in-process and in the kforward processes it
// starts, with a config directory of its own that trusts the temporary
// directory as the user's own (trustedDirs, as direnv's whitelist); never
// with the real user's approvals.
func init() {
	removeStaleConfigDirs()
	dir, err := os.MkdirTemp("", "kforward-e2e-config-")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		panic(err)
	}
	store := filepath.Join(dir, "kforward", "allowed.json")
	if err := os.MkdirAll(filepath.Dir(store), 0o700); err != nil {
		panic(err)
	}
	trusted, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		trusted = os.TempDir()
	}
	content := fmt.Sprintf(`{"trustedDirs": [%q, %q], "files": {}}`, os.TempDir(), trusted)
	if err := os.WriteFile(store, []byte(content), 0o600); err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
}

// removeStaleConfigDirs removes the config directories of test processes
// that have ended (there is no hook after the last test to remove one's
// own), as the cluster package does with its directories.
func removeStaleConfigDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kforward-e2e-config-*"))
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(data)); err == nil && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}
