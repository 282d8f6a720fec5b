package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kforward/kforward/config"
)

// debounce is how long the file must be quiet before it is read: editors
// and `kubectl create configmap` write in bursts.
const debounce = 30 * time.Millisecond

// fileWatch follows one forwards file through every way of saving it: a
// write in place, truncate-and-write, `cp` over it, an editor's write to a
// temporary file renamed over it, and a symlink swap (a mounted ConfigMap).
// It watches the file's directory, never the file itself (a watch on a
// file is lost when the file is replaced), and reads the file again after
// each burst of events, acting only when the content changed.
type fileWatch struct {
	path    string
	w       *fsnotify.Watcher
	dirs    map[string]bool // watched directories
	last    []byte          // content last read (valid or not)
	missing bool            // the file is gone; said so once
}

func watchFile(path string) (*fileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	f := &fileWatch{path: path, w: w, dirs: map[string]bool{}}
	if err := f.watchDirs(); err != nil {
		w.Close()
		return nil, err
	}
	return f, nil
}

func (f *fileWatch) close() { f.w.Close() }

// watchDirs watches the file's directory and, for a symlink, the
// directory of what it points to (the files behind a ConfigMap's symlinks
// live in a subdirectory that is swapped as a whole).
func (f *fileWatch) watchDirs() error {
	dirs := []string{filepath.Dir(f.path)}
	if real, err := filepath.EvalSymlinks(f.path); err == nil {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, d := range dirs {
		if f.dirs[d] {
			continue
		}
		if err := f.w.Add(d); err != nil {
			if len(f.dirs) == 0 {
				return fmt.Errorf("watch %s: %w", d, err)
			}
			continue // a target directory that went away with a swap
		}
		f.dirs[d] = true
	}
	return nil
}

// load reads and parses the file.
func (f *fileWatch) load() (*config.Config, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	f.last = data
	return config.ParseFile(f.path, data)
}

// run calls apply with every new valid content of the file until ctx ends.
// A receive on reload re-reads the file even when it did not change.
func (f *fileWatch) run(ctx context.Context, reload <-chan struct{}, log *slog.Logger, apply func(*config.Config)) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-f.w.Events:
			if !ok {
				return errors.New("file watch closed")
			}
			if f.relevant(ev) {
				timer.Reset(debounce)
			}
		case err, ok := <-f.w.Errors:
			if !ok {
				return errors.New("file watch closed")
			}
			log.Warn("watching the forwards file", "file", f.path, "err", err)
		case <-reload:
			log.Info("reloading on signal", "file", f.path)
			f.reload(log, true, apply)
		case <-timer.C:
			f.reload(log, false, apply)
		}
	}
}

// relevant reports whether an event may have changed the file: one on its
// name, on what it points to, or on a ConfigMap's "..data" links.
func (f *fileWatch) relevant(ev fsnotify.Event) bool {
	base := filepath.Base(ev.Name)
	if filepath.Clean(ev.Name) == filepath.Clean(f.path) || strings.HasPrefix(base, "..") {
		return true
	}
	real, err := filepath.EvalSymlinks(f.path)
	return err == nil && filepath.Base(real) == base
}

func (f *fileWatch) reload(log *slog.Logger, force bool, apply func(*config.Config)) {
	f.watchDirs() // a symlink may point somewhere new
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !f.missing {
			log.Warn("the forwards file is gone; every forward keeps running until it is back", "file", f.path)
		}
		f.missing, f.last = true, nil
		return
	case err != nil:
		log.Error("cannot read the forwards file; nothing changed", "file", f.path, "err", err)
		return
	}
	f.missing = false
	if !force && bytes.Equal(data, f.last) {
		return
	}
	f.last = data
	cfg, err := config.ParseFile(f.path, data)
	if err != nil {
		if errs := config.Errors(err); len(errs) > 0 {
			for _, e := range errs {
				log.Error("invalid forwards file; nothing changed", "err", e.Error())
			}
		} else {
			log.Error("invalid forwards file; nothing changed", "err", err)
		}
		return
	}
	apply(cfg)
}
