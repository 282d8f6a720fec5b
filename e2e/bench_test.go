package e2e

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkReloadToFirstConnection: from writing a forwards file that adds
// a forward to the first echo through it, against the local control plane.
// The target is well under 250 ms. Run with `make bench`.
func BenchmarkReloadToFirstConnection(b *testing.B) {
	c := needCluster(b)
	ns := namespace(b, c)
	createPod(b, c.Client, ns, "web")
	waitReadyPods(b, c.Client, ns, "app=web", 1)
	base := header(c, "", ns) + "  - name: first\n    pod: web\n    ports: [\":echo\"]\n"
	rf := runFile(b, base)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		port := freePort(b)
		begin := time.Now()
		rf.write(base + fmt.Sprintf("  - name: added\n    pod: web\n    ports: [\"%d:echo\"]\n", port))
		for {
			if reply, err := echoOnce(fmt.Sprintf("127.0.0.1:%d", port), "hi"); err == nil && reply == "hi" {
				break
			}
			if time.Since(begin) > 10*time.Second {
				b.Fatal("added forward not carrying connections 10s after the write")
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(begin)
		rf.write(base) // remove it again
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/reload")
}
