package e2e

import (
	"fmt"
	"os"
	"path/filepath"
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
	dir, err := os.MkdirTemp("", "kforward-e2e-config-")
	if err != nil {
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
