package edit

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

func TestWriteFileKeepsModeAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "forwards.yaml")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new\n" {
		t.Errorf("file has %q, want %q", got, "new\n")
	}
	if st, _ := os.Stat(path); runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the file: %v", len(entries), entries)
	}
}

func TestWriteFileCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "forwards.yaml")
	if err := WriteFile(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
}

// The file is replaced, not rewritten in place: a reader that opened the old
// one reads it whole.
func TestWriteFileReplacesInOneRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "forwards.yaml")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := WriteFile(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(old); string(got) != "old\n" {
		t.Errorf("the open old file reads %q, want %q", got, "old\n")
	}
}

// A watcher of the directory, as `kforward run` is, sees one event for the
// file: the rename that puts the new one in place.
func TestWriteFileIsOneChangeToAWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "forwards.yaml")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	var events []fsnotify.Event
	quiet := time.NewTimer(300 * time.Millisecond)
	for done := false; !done; {
		select {
		case e := <-w.Events:
			if e.Name == path {
				events = append(events, e)
			}
			quiet.Reset(300 * time.Millisecond)
		case err := <-w.Errors:
			t.Fatal(err)
		case <-quiet.C:
			done = true
		}
	}
	if len(events) != 1 {
		t.Errorf("the watcher saw %d events on the file, want 1: %v", len(events), events)
	}
}

func TestWriteFileFollowsSymlink(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on windows")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "real.yaml")
	link := filepath.Join(dir, "forwards.yaml")
	if err := os.WriteFile(target, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.yaml", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Lstat(link); st.Mode()&os.ModeSymlink == 0 {
		t.Error("the symlink was replaced by a file")
	}
	if got, _ := os.ReadFile(target); string(got) != "new\n" {
		t.Errorf("target has %q, want %q", got, "new\n")
	}
	if st, _ := os.Stat(target); st.Mode().Perm() != 0o640 {
		t.Errorf("target's mode %v, want 0640", st.Mode().Perm())
	}
}
