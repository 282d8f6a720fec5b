package e2e

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
)

// The data path against kube-apiserver and kwok (which runs the kubelet's
// port-forward code): a stalled client, health checks the node does not
// log, and 1,000 connections through one forward.

// TestStalledClient: one client asks for 1 GiB and never reads; another
// makes a request every 250ms for 20s through the same forward. Every one
// is answered within 1s, the tunnel is never redialed, and the stalled
// connection is closed once it has read nothing for stallTimeout (5s here),
// with a warning naming the forward and the client. What it left unread
// waited on disk meanwhile (diskBuffer), not in the session's way.
func TestStalledClient(t *testing.T) {
	t.Parallel()
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	for _, tr := range []config.Transport{config.WebSocket, config.SPDY} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			s := spec("stall", ns, config.Target{Kind: config.Pod, Name: "p"}, ":http")
			s.Transport = tr
			s.Health = config.Health{Interval: 2 * time.Second, Timeout: time.Second}
			s.ClientBuffer = config.DefaultClientBuffer
			s.DiskBuffer = config.DefaultDiskBuffer
			s.StallTimeout = 5 * time.Second
			log := &testutil.Buffer{}
			f := startForwardLog(t, c, s, slog.New(slog.NewTextHandler(log, nil)))
			addr := waitActive(t, f).Addresses[0]

			stalled, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			fmt.Fprintf(stalled, "GET /bytes/%d HTTP/1.1\r\nHost: p\r\n\r\n", 1<<30)

			const rounds = 80 // every 250ms for 20s
			var worst time.Duration
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for i := range rounds {
				<-tick.C
				begin := time.Now()
				body, err := get(addr, "/")
				took := time.Since(begin)
				if err != nil || strings.TrimSpace(body) != ns+"/p" {
					t.Fatalf("request %d beside the stalled client: %q, %v\nlog:\n%s\nstatus %+v", i, body, err, log, f.Status())
				}
				worst = max(worst, took)
			}
			t.Logf("%s: %d of %d requests answered beside a stalled client; slowest %s", tr, rounds, rounds, worst.Round(time.Millisecond))
			if worst > time.Second {
				t.Errorf("slowest request took %s, want each within 1s", worst)
			}
			if st := f.Status(); st.Reconnects != 0 || st.State != forward.Active {
				t.Errorf("forward %s after %d reconnects (%s); want the tunnel kept", st.State, st.Reconnects, st.LastError)
			}
			warning := ""
			for line := range strings.Lines(log.String()) {
				if strings.Contains(line, "the client is not reading") {
					warning = line
				}
			}
			for _, want := range []string{"forward=stall", "client=" + stalled.LocalAddr().String()} {
				if !strings.Contains(warning, want) {
					t.Errorf("no warning with %q for the stalled connection; log:\n%s", want, log)
				}
			}
		})
	}
}

// TestHealthCheckQuiet: 100 health checks leave nothing in the node's
// (kwok's) log. A half-open stream pair would be logged there once the
// kubelet's stream creation timeout (30s) has passed, so the log is read
// after that.
func TestHealthCheckQuiet(t *testing.T) {
	t.Parallel()
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "quiet")
	logFile := c.LogFile(cluster.Kwok)
	from := fileSize(t, logFile)
	var fs []*forward.Forward
	for _, tr := range []config.Transport{config.WebSocket, config.SPDY} {
		s := spec("quiet-"+string(tr), ns, config.Target{Kind: config.Pod, Name: "quiet"}, ":http")
		s.Transport = tr
		s.Health = config.Health{Interval: 100 * time.Millisecond, Timeout: time.Second}
		fs = append(fs, startForward(t, c, s))
	}
	for _, f := range fs {
		waitFor(t, 60*time.Second, "100 health checks", func() bool { return f.Status().HealthChecks >= 100 })
	}
	checked := time.Now()
	time.Sleep(31 * time.Second)
	for _, f := range fs {
		if st := f.Status(); st.Reconnects != 0 {
			t.Errorf("%s: %d reconnects (%s)", st.Name, st.Reconnects, st.LastError)
		}
	}
	var noisy []string
	for _, line := range linesFrom(t, logFile, from) {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "Unhandled Error") || strings.Contains(line, "timed out waiting for streams") {
			noisy = append(noisy, line)
		}
	}
	if len(noisy) > 0 {
		t.Fatalf("kwok logged %d errors during %d+%d health checks and the %s after, first:\n%s",
			len(noisy), fs[0].Status().HealthChecks, fs[1].Status().HealthChecks, time.Since(checked).Round(time.Second), noisy[0])
	}
	t.Logf("%d+%d health checks over both transports, kwok's log quiet %s later",
		fs[0].Status().HealthChecks, fs[1].Status().HealthChecks, time.Since(checked).Round(time.Second))
}

func fileSize(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func linesFrom(t *testing.T, path string, offset int64) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// TestThousandConnections: 1,000 connections open at once through one
// forward, each echoing its own messages; all released when they close.
func TestThousandConnections(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	s := spec("thousand", ns, config.Target{Kind: config.Pod, Name: "p"}, ":echo")
	s.Health = config.DefaultHealth
	s.ConnectTimeout = time.Minute
	f := startForward(t, c, s)
	addr := waitActive(t, f).Addresses[0]

	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(time.Minute))
			r := bufio.NewReader(c)
			for round := range 3 {
				msg := fmt.Sprintf("connection %d round %d", i, round)
				if _, err := io.WriteString(c, msg+"\n"); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				line, err := r.ReadString('\n')
				if err != nil || line != msg+"\n" {
					errs <- fmt.Errorf("connection %d: got %q, %v; want %q", i, line, err, msg)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	failIfAny(t, errs, n, "connections")
	st := f.Status()
	if st.Active != n || st.Reconnects != 0 {
		t.Fatalf("%d connections active after %d reconnects, want %d and none", st.Active, st.Reconnects, n)
	}
	t.Logf("%d connections open at once, %d messages echoed", n, 3*n)
}
