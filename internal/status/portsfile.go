package status

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kforward/kforward/internal/view"
	"github.com/kforward/kforward/runner"
)

// portsPoll is how often WritePorts looks for changed ports: a reload
// binds new ones within a moment, and looking is cheap.
const portsPoll = 200 * time.Millisecond

// PortsMarker is the first line of every ports file: a file at the path
// that does not start with it is someone else's, and is never overwritten
// or removed.
const PortsMarker = "# written by kforward run; removed when it stops; do not edit"

// CheckPortsFile refuses a ports file path where a file is that kforward
// did not write (`--ports-file .env` must not eat the user's .env). A
// file left by a kforward that was killed is fine: it is replaced.
func CheckPortsFile(path string) error {
	ours, err := ownPortsFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--ports-file: %w", err)
	case !ours:
		return fmt.Errorf("--ports-file %s exists and was not written by kforward; remove it or choose another path", path)
	}
	return nil
}

// ownPortsFile reports whether the file at path starts with PortsMarker;
// an error when there is none or it cannot be read.
func ownPortsFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return false, err
	} else if !st.Mode().IsRegular() {
		return false, nil
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return false, nil // empty, or unreadable past the open: not ours
	}
	return strings.TrimRight(line, "\r\n") == PortsMarker, nil
}

// WritePorts keeps the file at path holding PortsMarker and then the
// forwards' bound ports as env lines (see view.Env), until ctx ends; then
// it removes the file, since its ports no longer answer. It writes at
// once, even with no port bound yet, so a file a killed run left is
// replaced, then whenever the lines change. Each write is a new file
// renamed over the old, so a reader never sees half of one. A file at
// path that it did not write is never replaced or removed (see
// CheckPortsFile): it says so and waits for the path to be free.
func WritePorts(ctx context.Context, path string, snapshot func() runner.Snapshot, log *slog.Logger) {
	var last, failed, collided string
	written := false
	tick := time.NewTicker(portsPoll)
	defer tick.Stop()
	for {
		forwards := snapshot().Forwards
		if c := strings.Join(view.EnvCollisions(forwards), "; "); c != collided {
			if c != "" { // say it once per set, not at every tick
				log.Warn("lines left out of the ports file: their names are taken (rename a forward to get them)", "file", path, "collisions", c)
			}
			collided = c
		}
		if env := view.Env(forwards); !written || env != last {
			err := CheckPortsFile(path)
			if err == nil {
				err = writeAtomic(path, []byte(PortsMarker+"\n"+env))
			}
			if err != nil {
				if err.Error() != failed { // say it once, not at every tick
					log.Error("cannot write the ports file", "file", path, "err", err)
					failed = err.Error()
				}
			} else {
				last, failed, written = env, "", true
			}
		}
		select {
		case <-ctx.Done():
			removePorts(path, log)
			return
		case <-tick.C:
		}
	}
}

// removePorts removes the ports file if it is still the one kforward
// wrote.
func removePorts(path string, log *slog.Logger) {
	ours, err := ownPortsFile(path)
	if err != nil || !ours {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cannot remove the ports file", "file", path, "err", err)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing is there
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
