package status

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kforward/kforward/internal/view"
	"github.com/kforward/kforward/runner"
)

// portsPoll is how often WritePorts looks for changed ports: a reload
// binds new ones within a moment, and looking is cheap.
const portsPoll = 200 * time.Millisecond

// WritePorts keeps the file at path holding the forwards' bound ports as
// env lines (see view.Env), rewriting it whenever they change, until ctx
// ends; then it removes the file, since its ports no longer answer. Each
// write is a new file renamed over the old, so a reader never sees half
// of one.
func WritePorts(ctx context.Context, path string, snapshot func() runner.Snapshot, log *slog.Logger) {
	last, failed := "", ""
	tick := time.NewTicker(portsPoll)
	defer tick.Stop()
	for {
		if env := view.Env(snapshot().Forwards); env != last {
			if err := writeAtomic(path, []byte(env)); err != nil {
				if err.Error() != failed { // say it once, not at every tick
					log.Error("cannot write the ports file", "file", path, "err", err)
					failed = err.Error()
				}
			} else {
				last, failed = env, ""
			}
		}
		select {
		case <-ctx.Done():
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				log.Warn("cannot remove the ports file", "file", path, "err", err)
			}
			return
		case <-tick.C:
		}
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
