package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/kforward/kforward/forward"
)

// Issue 12, defect 8: a namespace's pod watch is released with the last
// forward that uses it. The API server's own count of open pod watches
// goes back down when the forward is removed from the file, and up again
// when it comes back (and the forward works again).
func TestRunnerReleasesPodWatch(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	other := namespaceWithPod(t, c, "web")
	baseline := podWatches(t, c)

	keep := header(c, "", ns) + "  - name: keep\n    pod: web\n    ports: [\":echo\"]\n"
	both := keep + fmt.Sprintf("  - name: other\n    pod: web\n    namespace: %s\n    ports: [\":echo\"]\n", other)
	rf := runFile(t, both)
	rf.waitState("keep", forward.Active)
	rf.waitState("other", forward.Active)
	waitFor(t, 30*time.Second, "two pod watches on the API server", func() bool { return podWatches(t, c)-baseline == 2 })

	begin := time.Now()
	rf.write(keep)
	waitFor(t, 30*time.Second, "other's pod watch closed on the API server", func() bool { return podWatches(t, c)-baseline == 1 })
	t.Logf("pod watch closed on the API server %s after the forward was removed from the file", time.Since(begin).Round(time.Millisecond))
	if s := rf.status("keep"); s.State != forward.Active {
		t.Fatalf("keep is %s after another namespace's forward was removed", s.State)
	}

	rf.write(both)
	s := rf.waitState("other", forward.Active)
	if got, err := echoOnce(s.Addresses[0], "again"); err != nil || got != "again" {
		t.Fatalf("other, added again, echoes %q, %v", got, err)
	}
	if n := podWatches(t, c) - baseline; n != 2 {
		t.Fatalf("%d pod watches after other was added again, want 2", n)
	}
}
