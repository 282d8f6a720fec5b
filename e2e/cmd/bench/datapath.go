package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// measure runs one scenario once through an open session and records its
// figures for round.
type measure func(ctx context.Context, f forwarder, s *session, round int) error

// rounds runs m for every forwarder in turn, round after round, each time
// through a fresh session to the bench pod, so that what one run leaves
// behind (a stalled tunnel, a kubectl that exited) cannot touch the next.
// A failure is recorded on the scenario's rows and the run goes on; only
// the end of ctx stops it.
func (b *bench) rounds(ctx context.Context, settings string, rows []string, m measure) error {
	for round := 1; round <= b.o.rounds; round++ {
		for _, f := range b.fs {
			err := b.once(ctx, f, "pod/"+benchPod, settings, round, m)
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

func (b *bench) once(ctx context.Context, f forwarder, target, settings string, round int, m measure) error {
	s, err := b.open(ctx, f, target, settings)
	if err != nil {
		return err
	}
	defer s.close()
	return m(ctx, f, s, round)
}

func (b *bench) fail(rows []string, f forwarder, round int, err error) {
	b.logf("%s, %s, round %d: %v", strings.Join(rows, ","), f.Name, round, err)
	for _, r := range rows {
		b.res.note(r, f, round, noteError)
	}
}

// transfer times one transfer of bytes and records its rate and, for a
// forwarding process, its CPU time per GiB.
func (b *bench) transfer(ctx context.Context, f forwarder, s *session, round int, rateRow, cpuRow string, bytes int64, do func(context.Context) error) error {
	var cpu0 time.Duration
	var err error
	if s.proc != nil {
		if cpu0, err = s.proc.cpu(); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := do(ctx); err != nil {
		return err
	}
	took := time.Since(start)
	b.res.value(rateRow, f, round, float64(bytes)/1e6/took.Seconds())
	if s.proc != nil {
		cpu1, err := s.proc.cpu()
		if err != nil {
			return err
		}
		b.res.value(cpuRow, f, round, (cpu1-cpu0).Seconds()/(float64(bytes)/(1<<30)))
	}
	return nil
}

func (b *bench) download(ctx context.Context, f forwarder, s *session, round int) error {
	return b.transfer(ctx, f, s, round, "download", "cpu.download", b.o.size, func(ctx context.Context) error {
		return download(ctx, s.http, b.o.size)
	})
}

func (b *bench) upload(ctx context.Context, f forwarder, s *session, round int) error {
	return b.transfer(ctx, f, s, round, "upload", "cpu.upload", b.o.size, func(ctx context.Context) error {
		return upload(ctx, s.http, b.o.size)
	})
}

// parallelDownload fetches size bytes in all over o.parallel connections
// at once.
func (b *bench) parallelDownload(ctx context.Context, f forwarder, s *session, round int) error {
	return b.transfer(ctx, f, s, round, "parallel", "cpu.parallel", b.o.size, func(ctx context.Context) error {
		n := b.o.parallel
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			part := b.o.size / int64(n)
			if i == 0 {
				part += b.o.size % int64(n)
			}
			wg.Go(func() { errs[i] = download(ctx, s.http, part) })
		}
		wg.Wait()
		return errors.Join(errs...)
	})
}

// connect opens o.conns connections one after another, each carrying one
// byte each way, and records the p50 and p99 of their round trips.
func (b *bench) connect(ctx context.Context, f forwarder, s *session, round int) error {
	lat := make([]float64, 0, b.o.conns)
	for i := range b.o.conns {
		start := time.Now()
		if err := echoOnce(ctx, s.once, 1); err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, b.o.conns, err)
		}
		lat = append(lat, ms(time.Since(start)))
	}
	b.res.value("connect.p50", f, round, percentile(lat, 50))
	b.res.value("connect.p99", f, round, percentile(lat, 99))
	return nil
}

// rate runs request/response exchanges over 1, then o.rateConns, open
// connections for o.rateFor each.
func (b *bench) rate(ctx context.Context, f forwarder, s *session, round int) error {
	for _, m := range []struct {
		conns int
		row   string
	}{{1, "rate1"}, {b.o.rateConns, "rateN"}} {
		lat, err := exchanges(ctx, s.echo, m.conns, b.o.msg, b.o.rateFor)
		if err != nil {
			return fmt.Errorf("%d connections: %w", m.conns, err)
		}
		b.res.value(m.row+".rps", f, round, float64(len(lat))/b.o.rateFor.Seconds())
		b.res.value(m.row+".p50", f, round, percentile(lat, 50))
		b.res.value(m.row+".p99", f, round, percentile(lat, 99))
	}
	return nil
}

// exchanges opens conns connections, then has each send size bytes and
// read their echo, over and over for d; it returns every exchange's
// latency in ms.
func exchanges(ctx context.Context, addr string, conns, size int, d time.Duration) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	type worker struct {
		lat  []float64
		err  error
		done func()
	}
	ws := make([]*worker, conns)
	defer func() {
		for _, w := range ws {
			if w != nil && w.done != nil {
				w.done()
			}
		}
	}()
	open := make([]net.Conn, conns)
	for i := range ws {
		c, done, err := dial(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("open connection %d: %w", i+1, err)
		}
		ws[i], open[i] = &worker{done: done}, c
	}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { // ends at end, or earlier on an error
			msg, buf := make([]byte, size), make([]byte, size)
			for j := range msg {
				msg[j] = byte('a' + j%26)
			}
			for time.Now().Before(end) {
				start := time.Now()
				if w.err = exchange(open[i], msg, buf); w.err != nil {
					return
				}
				w.lat = append(w.lat, ms(time.Since(start)))
			}
		})
	}
	wg.Wait()
	var lat []float64
	var errs []error
	for _, w := range ws {
		lat = append(lat, w.lat...)
		errs = append(errs, w.err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, errors.New("no exchange completed")
	}
	return lat, nil
}

// slowReader: one client asks for 1 GiB and never reads it; meanwhile
// another sends GET / every o.slowEvery for o.slowWindow, each on a new
// connection, allowed to wait until 2 s after the window. Records the
// share answered and the worst latency of those answered.
func (b *bench) slowReader(ctx context.Context, f forwarder, s *session, round int) error {
	stalled, done, err := dial(ctx, s.http)
	if err != nil {
		return err
	}
	defer done()
	if _, err := fmt.Fprintf(stalled, "GET /bytes/%d HTTP/1.1\r\nHost: bench\r\n\r\n", 1<<30); err != nil {
		return err
	}
	windowEnd := time.Now().Add(b.o.slowWindow)
	reqCtx, cancel := context.WithDeadline(ctx, windowEnd.Add(2*time.Second))
	defer cancel()
	n := int(b.o.slowWindow / b.o.slowEvery)
	lat := make([]float64, n) // -1: not answered
	var wg sync.WaitGroup
	tick := time.NewTicker(b.o.slowEvery)
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		wg.Go(func() { // ends by reqCtx's deadline at the latest
			start := time.Now()
			body, _, err := request(reqCtx, s.http, "GET", "/", 0, nil)
			lat[i] = -1
			if err == nil && strings.TrimSpace(body) == b.ns+"/"+benchPod {
				lat[i] = ms(time.Since(start))
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	answered, worst := 0, 0.0
	for _, l := range lat {
		if l >= 0 {
			answered++
			worst = max(worst, l)
		}
	}
	b.res.value("slow.share", f, round, float64(answered)/float64(n))
	if answered > 0 {
		b.res.value("slow.worst", f, round, worst)
	} else {
		b.res.note("slow.worst", f, round, "none answered")
	}
	return nil
}
