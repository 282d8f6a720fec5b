package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// 3. A checkout of another branch removes the file's directory and makes
// it again: the watch follows it back, and the edit made there is applied.
func TestWatchSurvivesDirectoryRemovedAndMadeAgain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo", "deploy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "forwards.yaml")
	if err := os.WriteFile(file, []byte(forwardsFile(map[string]int{"a": 9001})), 0o644); err != nil {
		t.Fatal(err)
	}
	h := runAt(t, file, 0)
	a := h.current()["a"]

	for round, gone := range []string{dir, filepath.Dir(dir)} { // the directory, then its parent too
		if err := os.RemoveAll(gone); err != nil {
			t.Fatal(err)
		}
		h.waitFor("the file said gone", func() bool { return strings.Count(h.log.String(), "the forwards file is gone") == round+1 })
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ports := map[string]int{"a": 9001, "b": 9002}
		if round == 1 {
			ports["c"] = 9003
		}
		h.write(forwardsFile(ports))
		h.waitFor("the edit made in the new directory applied", func() bool {
			return h.current()["b"] != nil && (round == 0 || h.current()["c"] != nil)
		})
		if h.current()["a"] != a {
			t.Fatal("the unchanged forward was restarted")
		}
		if errs := h.r.Snapshot().LastReload.Errors; len(errs) > 0 {
			t.Fatalf("the last reload says %q while the file is there", errs)
		}
	}
}
