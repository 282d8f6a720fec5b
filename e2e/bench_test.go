package e2e

import (
	"testing"
	"time"
)

// BenchmarkReloadToFirstConnection: from writing a forwards file that adds
// a forward to the first echo through it, against the local control plane.
// The target is well under 250 ms. Run with `make bench`.
func BenchmarkReloadToFirstConnection(b *testing.B) {
	c := needCluster(b)
	ns := namespaceWithPod(b, c, "web")
	base := header(c, "", ns) + "  - name: first\n    pod: web\n    ports: [\":echo\"]\n"
	rf := runFile(b, base)
	var total time.Duration
	for b.Loop() {
		total += rf.addAndEcho(base, "added")
		rf.write(base) // remove it again
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/reload")
}
