package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
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
	quiet   time.Duration // the debounce
	w       *fsnotify.Watcher
	dirs    map[string]bool // watched directories
	last    []byte          // content last read (valid or not)
	missing bool            // the file is gone; said so once
}

// watchFile watches path; it is read once it has been quiet for quiet.
func watchFile(path string, quiet time.Duration) (*fileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	f := &fileWatch{path: path, quiet: quiet, w: w, dirs: map[string]bool{}}
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
	data, err := config.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	f.last = data
	return config.ParseFile(f.path, data)
}

// run reads the file again after every burst of changes, on every receive
// on reload (even when it did not change) and on every request (answered
// with the result), and hands what it read to apply until ctx ends.
func (f *fileWatch) run(ctx context.Context, reload <-chan struct{}, requests <-chan chan<- Reload, log *slog.Logger, apply func(*config.Config, error, string) Reload) error {
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
				timer.Reset(f.quiet)
			}
		case err, ok := <-f.w.Errors:
			if !ok {
				return errors.New("file watch closed")
			}
			log.Warn("watching the forwards file", "file", f.path, "err", err)
		case <-reload:
			log.Info("reloading on signal", "file", f.path)
			cfg, err := f.read(log, true)
			apply(cfg, err, TriggerSignal)
		case reply := <-requests:
			cfg, err := f.read(log, true)
			reply <- apply(cfg, err, TriggerRequest)
		case <-timer.C:
			if cfg, err := f.read(log, false); cfg != nil || err != nil {
				apply(cfg, err, TriggerFile)
			}
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

// errGone is the result of reading a file that was deleted.
var errGone = errors.New("the forwards file is gone; every forward keeps running until it is back")

// read reads and parses the file again. It returns nil, nil when there is
// nothing new: the content did not change (unless force) or the file is
// still gone (said once).
func (f *fileWatch) read(log *slog.Logger, force bool) (*config.Config, error) {
	f.watchDirs() // a symlink may point somewhere new
	data, err := config.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if f.missing && !force {
			return nil, nil
		}
		f.missing, f.last = true, nil
		return nil, fmt.Errorf("%s: %w", f.path, errGone)
	case err != nil:
		return nil, fmt.Errorf("cannot read the forwards file: %w", err)
	}
	f.missing = false
	if !force && bytes.Equal(data, f.last) {
		return nil, nil
	}
	f.last = data
	return config.ParseFile(f.path, data)
}
