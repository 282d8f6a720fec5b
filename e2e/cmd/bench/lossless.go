package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforward/kforward/e2e/netem"
	"github.com/kforward/kforward/internal/testutil"
)

// Scenarios of what a forwarder must not lose: a client that reads slower
// than the pod sends (a pg_dump compressing as it reads), and an upload
// over a slow uplink (where pings wait behind the upload).

// pacedReader: one client downloads o.pacedSize and reads it at
// o.pacedRate, far below what the pod sends; meanwhile another sends
// GET / every o.slowEvery, each on a new connection. Records how many MB
// the paced client got (all of them unless its connection was cut), and
// the other requests' worst latency and failures.
func (b *bench) pacedReader(ctx context.Context, f forwarder, s *session, round int) error {
	n := b.o.pacedSize
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n/int64(b.o.pacedRate)+30)*time.Second)
	defer cancel()
	c, done, err := dial(ctx, s.http)
	if err != nil {
		return err
	}
	defer done()
	if _, err := fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n", n); err != nil {
		return err
	}
	got := make(chan int64, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReaderSize(&testutil.PacedReader{R: c, Rate: b.o.pacedRate}, 64<<10), nil)
		if err != nil {
			got <- 0
			return
		}
		k, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- k
	}()
	worst, failed := others(ctx, s.http, b.o.slowEvery, b.ns+"/"+benchPod, got)
	k := <-got
	b.res.value("paced.mb", f, round, float64(k)/1e6)
	b.res.value("paced.worst", f, round, worst)
	b.res.value("paced.failed", f, round, float64(failed))
	if k < n {
		b.logf("%s, round %d: the paced reader got %d of %d bytes", f.Name, round, k, n)
	}
	return nil
}

// others sends GET / to addr every interval, on a new connection each,
// until stop yields (and puts back) a value, and returns the worst latency
// (ms) of those answered with want and how many were not.
func others(ctx context.Context, addr string, every time.Duration, want string, stop chan int64) (worst float64, failed int) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case v := <-stop:
			stop <- v
			return worst, failed
		case <-ctx.Done():
			return worst, failed
		case <-tick.C:
		}
		start := time.Now()
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		body, _, err := request(reqCtx, addr, http.MethodGet, "/", 0, nil)
		cancel()
		if err != nil || strings.TrimSpace(body) != want {
			failed++
			continue
		}
		worst = max(worst, ms(time.Since(start)))
	}
}

// uplink: every forwarder reaches the API server through e2e/netem, a
// link of o.uplinkRate up with o.uplinkDelay each way (a home uplink),
// and uploads o.uplinkSize while another client sends GET / every 500ms.
// Records the MB uploaded before the upload ended (all of it when it
// completed), the tunnels redialed meanwhile (kubectl: whether it
// exited), and the other requests' failures and slowest answer. direct
// has no API server to go through.
func (b *bench) uplink(ctx context.Context) error {
	u, err := url.Parse(b.c.Config.Host)
	if err != nil {
		return err
	}
	link, err := netem.Start(u.Host, netem.Link{Delay: b.o.uplinkDelay, Up: b.o.uplinkRate})
	if err != nil {
		return err
	}
	defer link.Close()
	cfg, err := clientcmd.LoadFromFile(b.c.Kubeconfig)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + link.Addr() // the certificate is for 127.0.0.1, as the link is
	}
	b.via = filepath.Join(b.tmp, "kubeconfig-uplink")
	if err := clientcmd.WriteToFile(*cfg, b.via); err != nil {
		return err
	}
	defer func() { b.via = "" }()
	rows := []string{"uplink.mb", "uplink.reconnects", "uplink.failed", "uplink.worst"}
	for round := 1; round <= b.o.rounds; round++ {
		for _, f := range b.fs {
			if f.kind == direct {
				continue
			}
			err := b.once(ctx, f, "pod/"+benchPod, "", round, b.uplinkOnce)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				b.fail(rows, f, round, err)
			}
		}
	}
	return nil
}

func (b *bench) uplinkOnce(ctx context.Context, f forwarder, s *session, round int) error {
	n := b.o.uplinkSize
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n/int64(b.o.uplinkRate)+60)*time.Second)
	defer cancel()
	connected := strings.Count(s.proc.out.tail(), "msg=connected")
	sent := make(chan int64, 1)
	go func() { sent <- sendCounted(ctx, s.http, n) }()
	worst, failed := others(ctx, s.http, 500*time.Millisecond, b.ns+"/"+benchPod, sent)
	k := <-sent
	b.res.value("uplink.mb", f, round, float64(k)/1e6)
	b.res.value("uplink.failed", f, round, float64(failed))
	b.res.value("uplink.worst", f, round, worst)
	switch {
	case f.kind == kubectlKind && s.proc.exited():
		b.res.value("uplink.reconnects", f, round, 1)
	case f.kind == kubectlKind:
		b.res.value("uplink.reconnects", f, round, 0)
	default:
		b.res.value("uplink.reconnects", f, round, float64(strings.Count(s.proc.out.tail(), "msg=connected")-connected))
	}
	if k < n {
		b.logf("%s, round %d: %d of %d bytes uploaded", f.Name, round, k, n)
	}
	return nil
}

// sendCounted uploads n bytes to the backend's sink and returns how many
// the backend says it read, or, when the upload fails, how many were sent
// before it did.
func sendCounted(ctx context.Context, addr string, n int64) int64 {
	c, done, err := dial(ctx, addr)
	if err != nil {
		return 0
	}
	defer done()
	if _, err := fmt.Fprintf(c, "POST /sink HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", n); err != nil {
		return 0
	}
	buf := make([]byte, 64<<10)
	var written int64
	for written < n {
		k, err := c.Write(buf[:min(n-written, int64(len(buf)))])
		written += int64(k)
		if err != nil {
			return written
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return written
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	got, err := strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
	if err != nil {
		return 0
	}
	return got
}
