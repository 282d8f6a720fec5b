package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kforward out of file descriptors (a low `ulimit -n`, clients holding
// them all) keeps its listener: accepts fail while the clients stay,
// kforward says so once, and once they have gone a new client is served
// on the same port.
func TestFaultOutOfFileDescriptors(t *testing.T) {
	c := needCluster(t)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit (util-linux) is needed to run kforward with few file descriptors")
	}
	ns := namespace(t, c)
	createOncePod(t, c, ns, "web")
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(header(c, "", ns)+"  - name: once\n    pod: web\n    ports: [\":once\"]\n"), 0o644)
	// Soft and hard: Go raises the soft limit to the hard one at start.
	const nofile = 48
	k := startRunUnder(t, []string{prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"}, file, "--no-tui", "--status-addr", "off")
	addr := strings.Fields(k.line(t))[1]
	if err := echoOnceClosed(addr, "before"); err != nil {
		t.Fatalf("echo before: %v\nkforward's log:\n%s", err, k.stderr.String())
	}

	// More clients than kforward has descriptors: the kernel completes
	// their handshakes into the listener's backlog; kforward's accepts
	// fail. Each says one line, so that the pod ("once") answers and ends
	// its side, and the connection ends once its client has gone.
	var held []net.Conn
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for i := range 2 * nofile {
		h, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		held = append(held, h)
		fmt.Fprintln(h, "hold")
	}
	waitFor(t, 30*time.Second, "kforward out of file descriptors", func() bool {
		return strings.Contains(k.stderr.String(), "too many open files")
	})
	// Accepts keep failing while the clients stay: paused 5ms, 10ms, ...
	// up to 1s, about 9 failures in these 2s, and one line for them all.
	time.Sleep(2 * time.Second)
	during := k.stderr.String()
	for _, h := range held {
		h.Close()
	}
	held = nil

	if err := echoOnceClosed(addr, "after"); err != nil {
		t.Fatalf("a client after the others left: %v\nkforward's log:\n%s", err, k.stderr.String())
	}
	if n, again := strings.Count(during, "cannot accept connections"), strings.Count(during, "accepting connections again"); n != 1 || again != 0 {
		t.Fatalf("while the clients held every descriptor: %d warnings and %d recoveries, want 1 and 0; kforward's log:\n%s", n, again, during)
	}
	// Every episode ends with a line that says how many accepts failed in
	// it; the first one, long, counts them all. The clients leaving may
	// start more, short ones (their connections, accepted at last, take
	// descriptors until they end).
	log := k.stderr.String()
	warned := strings.Count(log, "cannot accept connections")
	var failed []int
	for line := range strings.Lines(log) {
		if _, rest, ok := strings.Cut(line, "accepting connections again"); ok {
			f := -1
			if _, n, ok := strings.Cut(rest, "failed="); ok {
				fmt.Sscanf(n, "%d", &f)
			}
			failed = append(failed, f)
		}
	}
	t.Logf("%d episodes, failed accepts in each: %v", warned, failed)
	if len(failed) != warned || failed[0] < 5 {
		t.Fatalf("%d warnings, recoveries after %v failed accepts; want a recovery per episode, the first after 5 or more; kforward's log:\n%s",
			warned, failed, log)
	}
	select {
	case <-k.exited:
		t.Fatalf("kforward exited: %v", k.err)
	default:
	}
}
