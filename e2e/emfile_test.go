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
	time.Sleep(2 * time.Second) // accepts keep failing, paused up to 1s each
	for _, h := range held {
		h.Close()
	}
	held = nil

	if err := echoOnceClosed(addr, "after"); err != nil {
		t.Fatalf("a client after the others left: %v\nkforward's log:\n%s", err, k.stderr.String())
	}
	// Once per episode, not per failed accept. The clients leaving may
	// make a second episode (their connections, accepted at last, take
	// descriptors until they end), rarely more.
	log := k.stderr.String()
	warned := strings.Count(log, "cannot accept connections")
	again, failed := 0, 0
	for line := range strings.Lines(log) {
		if _, n, ok := strings.Cut(line, "accepting connections again"); ok {
			again++
			var f int
			if _, err := fmt.Sscanf(n[strings.Index(n, "failed=")+len("failed="):], "%d", &f); err == nil {
				failed += f
			}
		}
	}
	t.Logf("%d episodes, %d failed accepts", warned, failed)
	if warned < 1 || warned > 3 || again != warned || failed < 2*warned {
		t.Fatalf("%d warnings and %d recoveries for %d failed accepts; want one of each per episode, 1 to 3 episodes, more failures than lines; kforward's log:\n%s",
			warned, again, failed, log)
	}
	select {
	case <-k.exited:
		t.Fatalf("kforward exited: %v", k.err)
	default:
	}
}
