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
	"slices"
	"strings"
	"sync"
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
//
// A directory can go too: `git checkout` of another branch removes it and
// makes it again, and inotify drops the watch of a removed directory for
// good. So while the directory is gone its nearest existing parent is
// watched instead, to see it come back, and each directory watched is
// remembered as the one it was (not by name), so that a new one under the
// same name is watched again.
type fileWatch struct {
	path    string
	quiet   time.Duration // the debounce
	w       *fsnotify.Watcher
	dirs    map[string]os.FileInfo // watched directories, as they were when watched
	last    []byte                 // content last read (valid or not)
	missing bool                   // the file is gone; said so once
}

// watchFile watches path; it is read once it has been quiet for quiet.
func watchFile(path string, quiet time.Duration) (*fileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	f := &fileWatch{path: path, quiet: quiet, w: w, dirs: map[string]os.FileInfo{}}
	if _, err := f.arm(); err != nil {
		w.Close()
		return nil, err
	}
	return f, nil
}

func (f *fileWatch) close() { f.w.Close() }

// arm makes the watches what the file needs now: its directory (or, while
// that is gone, the nearest parent that exists) and, for a symlink, the
// directory of what it points to (the files behind a ConfigMap's symlinks
// live in a subdirectory that is swapped as a whole). A watched directory
// that was removed, or replaced by another of the same name, is let go.
// It reports whether it began to watch a directory: the file may have
// been written there before the watch was.
func (f *fileWatch) arm() (added bool, err error) {
	want := []string{existingDir(filepath.Dir(f.path))}
	if real, err := filepath.EvalSymlinks(f.path); err == nil {
		want = append(want, filepath.Dir(real))
	}
	watched := map[string]bool{}
	for _, d := range f.w.WatchList() {
		watched[d] = true
	}
	for d, was := range f.dirs {
		now, err := os.Stat(d)
		if !watched[d] || err != nil || !os.SameFile(was, now) || !slices.Contains(want, d) {
			f.w.Remove(d) // fails when inotify has dropped it already
			delete(f.dirs, d)
		}
	}
	for _, d := range want {
		if f.dirs[d] != nil {
			continue
		}
		st, statErr := os.Stat(d)
		if statErr == nil {
			statErr = f.w.Add(d)
		}
		if statErr != nil {
			if len(f.dirs) == 0 {
				return added, fmt.Errorf("watch %s: %w", d, statErr)
			}
			continue // a target directory that went away with a swap
		}
		f.dirs[d], added = st, true
	}
	return added, nil
}

// existingDir is dir, or its nearest parent that exists if dir does not.
func existingDir(dir string) string {
	for {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
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
//
// Reading never waits for applying. Applying takes as long as stopping
// the forwards that go (each says goodbye to its tunnel) and printing the
// summary take, and a save made meanwhile must still be read while it is
// on disk: an editor's valid save followed by a bad one, each 50 ms after
// the last, would otherwise be read only as the bad one, and the valid one
// would never apply. So an applier of run's applies what was read, in
// order, coalescing what piled up while it was busy: the newest valid
// file, then the newest refusal if one came after it.
func (f *fileWatch) run(ctx context.Context, reload <-chan struct{}, requests <-chan chan<- Reload, log *slog.Logger, apply func(*config.Config, error, string) Reload) error {
	in := &inbox{wake: make(chan struct{}, 1)}
	ctx, stop := context.WithCancel(ctx)
	var applier sync.WaitGroup
	defer applier.Wait() // no apply outlives run: the runner shuts down next
	defer stop()
	applier.Go(func() { in.applyAll(ctx, apply) })

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
			// A directory made or removed may be the file's or one of
			// its parents: watch what is there now.
			rearmed := false
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				rearmed, _ = f.arm()
			}
			if rearmed || f.relevant(ev) {
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
			in.put(reading{cfg: cfg, err: err, trigger: TriggerSignal})
		case reply := <-requests:
			cfg, err := f.read(log, true)
			in.put(reading{cfg: cfg, err: err, trigger: TriggerRequest, replies: []chan<- Reload{reply}})
		case <-timer.C:
			if cfg, err := f.read(log, false); cfg != nil || err != nil {
				in.put(reading{cfg: cfg, err: err, trigger: TriggerFile})
			}
		}
	}
}

// reading is one reading of the file: a valid file (cfg), or why it was
// refused (err), and the requests waiting for what comes of it.
type reading struct {
	cfg     *config.Config
	err     error
	trigger string
	replies []chan<- Reload // each with room for its answer
}

// inbox holds what was read and not yet applied. Only the newest valid
// file matters (applying it makes the forwards what it says, whatever came
// before), and only a refusal newer than it (the last word on the file):
// older readings are superseded, and the requests waiting for them get the
// answer of what superseded them.
type inbox struct {
	mu      sync.Mutex
	valid   *reading      // the newest valid file not yet applied
	refused *reading      // a refusal newer than valid, not yet recorded
	wake    chan struct{} // has room for one: the applier has something to do
}

func (in *inbox) put(r reading) {
	in.mu.Lock()
	if r.err == nil {
		if in.valid != nil {
			r.replies = append(in.valid.replies, r.replies...)
		}
		if in.refused != nil {
			r.replies = append(r.replies, in.refused.replies...)
		}
		in.valid, in.refused = &r, nil
	} else {
		if in.refused != nil {
			r.replies = append(in.refused.replies, r.replies...)
		}
		in.refused = &r
	}
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default: // already woken: it takes everything there is
	}
}

func (in *inbox) take() (valid, refused *reading) {
	in.mu.Lock()
	defer in.mu.Unlock()
	valid, refused = in.valid, in.refused
	in.valid, in.refused = nil, nil
	return valid, refused
}

// applyAll applies what is put in the inbox until ctx ends; what is still
// there then is dropped (the runner is stopping: Reload says so).
func (in *inbox) applyAll(ctx context.Context, apply func(*config.Config, error, string) Reload) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.wake:
		}
		valid, refused := in.take()
		for _, r := range []*reading{valid, refused} {
			if r == nil || ctx.Err() != nil {
				continue
			}
			res := apply(r.cfg, r.err, r.trigger)
			for _, reply := range r.replies {
				reply <- res
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
	f.arm() // a symlink may point somewhere new
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
