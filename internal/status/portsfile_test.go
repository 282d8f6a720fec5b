package status

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

// runPorts runs WritePorts on path until the returned stop is called;
// stop returns once it has.
func runPorts(t *testing.T, path string, snap func() runner.Snapshot, log *strings.Builder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return log.Write(p)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		WritePorts(ctx, path, snap, slog.New(slog.NewTextHandler(w, nil)))
	}()
	return func() {
		cancel()
		<-done
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func read(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// A run that was killed leaves its file; the next one replaces it at once,
// even before any port is bound, and removes it when it stops.
func TestPortsFileWrittenAtOnceAndRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.env")
	stale := PortsMarker + "\nAPI_PORT=5000\n"
	os.WriteFile(path, []byte(stale), 0o644)
	if err := CheckPortsFile(path); err != nil {
		t.Fatalf("a file a killed kforward left: %v", err)
	}
	var mu sync.Mutex
	snap := runner.Snapshot{}
	get := func() runner.Snapshot { mu.Lock(); defer mu.Unlock(); return snap }
	var log strings.Builder
	stop := runPorts(t, path, get, &log)
	waitFor(t, "the empty file", func() bool { return read(path) == PortsMarker+"\n" })

	mu.Lock()
	snap.Forwards = []forward.Status{{Name: "web", Ports: []forward.PortStatus{{Local: 8080, Remote: "80"}}}}
	mu.Unlock()
	want := PortsMarker + "\nWEB_PORT=8080\nWEB_PORT_80=8080\n"
	waitFor(t, "the port", func() bool { return read(path) == want })

	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the ports file outlived the run: %v", err)
	}
}

// --ports-file .env must not eat the user's .env: not at start, and not
// at the end if one took the path meanwhile.
func TestPortsFileNeverTouchesAFileItDidNotWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	mine := "DATABASE_URL=postgres://localhost/dev\n"
	os.WriteFile(path, []byte(mine), 0o644)
	err := CheckPortsFile(path)
	want := "--ports-file " + path + " exists and was not written by kforward; remove it or choose another path"
	if err == nil || err.Error() != want {
		t.Fatalf("CheckPortsFile:\n got %v\nwant %s", err, want)
	}
	for name, content := range map[string]string{"empty": "", "marker later": "X=1\n" + PortsMarker + "\n"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		if CheckPortsFile(p) == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	snap := func() runner.Snapshot {
		return runner.Snapshot{Forwards: []forward.Status{{Name: "web", Ports: []forward.PortStatus{{Local: 8080, Remote: "80"}}}}}
	}
	var log strings.Builder
	stop := runPorts(t, path, snap, &log)
	time.Sleep(3 * portsPoll)
	stop()
	if got := read(path); got != mine {
		t.Errorf("the user's file became %q", got)
	}
	if !strings.Contains(log.String(), "was not written by kforward") || strings.Count(log.String(), "level=ERROR") != 1 {
		t.Errorf("want one error in the log, got:\n%s", log.String())
	}

	// Written by kforward, then replaced by the user's while it ran.
	other := filepath.Join(dir, "ports.env")
	log.Reset()
	stop = runPorts(t, other, snap, &log)
	waitFor(t, "the ports file", func() bool { return strings.HasPrefix(read(other), PortsMarker) })
	os.WriteFile(other, []byte(mine), 0o644)
	stop()
	if got := read(other); got != mine {
		t.Errorf("the file the user put there became %q", got)
	}
}

func TestPortsFileWarnsOnceAboutCollisions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.env")
	snap := func() runner.Snapshot {
		return runner.Snapshot{Forwards: []forward.Status{
			{Name: "web_1", Ports: []forward.PortStatus{{Local: 8081, Remote: "80"}}},
			{Name: "web-1", Ports: []forward.PortStatus{{Local: 8080, Remote: "80"}}},
		}}
	}
	var log strings.Builder
	stop := runPorts(t, path, snap, &log)
	waitFor(t, "the ports file", func() bool { return strings.HasPrefix(read(path), PortsMarker) })
	time.Sleep(3 * portsPoll)
	stop()
	if n := strings.Count(log.String(), "level=WARN"); n != 1 || !strings.Contains(log.String(), "WEB_1_PORT: web_1 collides with web-1") {
		t.Errorf("want one warning naming the collision, got:\n%s", log.String())
	}
}
