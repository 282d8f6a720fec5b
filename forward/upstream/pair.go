package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/spdystream/spdy"
	corev1 "k8s.io/api/core/v1"
)

// Bytes counts what a forward carries.
type Bytes struct {
	In  atomic.Int64 // from the pod to local clients
	Out atomic.Int64 // from local clients to the pod
}

// PodError is what the kubelet reported on a connection's error stream,
// for example that nothing listens on the port inside the pod.
type PodError struct {
	Port int
	Msg  string
}

func (e *PodError) Error() string { return fmt.Sprintf("port %d: %s", e.Port, e.Msg) }

// The headers of a pair's SYN_STREAMs; SPDY wants header names lowercase.
var (
	headerStreamType = strings.ToLower(corev1.StreamType)
	headerPort       = strings.ToLower(corev1.PortHeader)
	headerRequestID  = strings.ToLower(corev1.PortForwardRequestIDHeader)
)

// pair is one local connection carried over an error stream and a data
// stream, as the kubelet's port-forward protocol wants.
type pair struct {
	c             *Conn
	errID, dataID uint32
	port          int
	local         net.Conn
	raw           syscall.RawConn // for writes that must not block; nil if unavailable
	n             *Bytes

	replyCh  chan struct{} // the data stream's SYN_REPLY arrived
	podDone  chan struct{} // the pod's side ended and all of it was delivered
	errDone  chan struct{} // the error stream ended
	aborted  chan struct{} // the connection failed; why is in abortErr
	wake     chan struct{} // something is queued for the local client
	room     chan struct{} // the local client took some of what was queued
	stopped  chan struct{} // closed by finish: the pair's goroutines exit
	once     struct{ reply, pod, err, abort sync.Once }
	abortErr error

	mu          sync.Mutex
	queue       [][]byte // pod data waiting for the local client, in memory
	queued      int
	spill       *spill // and after it, on disk (Overflow); nil until needed
	writing     bool   // the drain goroutine is writing to the local client
	podFIN      bool
	errText     []byte
	finSent     bool // we half-closed the data stream
	resetByPeer bool // the kubelet reset a stream of the pair
	finished    bool
}

// Forward carries local over a new stream pair to port in the pod, until
// either side ends it; n counts the bytes. It returns ErrNoStream when the
// pair could not be opened within timeout (nothing was read from local
// then), a *PodError when the kubelet reported one, ErrClientStalled when
// local did not read, or why the connection failed.
func (c *Conn) Forward(local net.Conn, port int, timeout time.Duration, n *Bytes) error {
	p, err := c.open(local, port, timeout, n)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.upload()
	}()
	go func() {
		defer wg.Done()
		p.drain()
	}()
	err = p.wait(timeout)
	p.finish()
	wg.Wait() // no upload is mid-write any more: what follows comes last
	p.tell(err)
	return err
}

// open sends the SYN_STREAMs of a new pair, both at once and the error
// stream already half-closed (the client sends nothing on it), and waits
// for the data stream's reply: one round trip.
func (c *Conn) open(local net.Conn, port int, timeout time.Duration, n *Bytes) (*pair, error) {
	p := &pair{
		c: c, local: local, n: n, port: port,
		replyCh: make(chan struct{}), podDone: make(chan struct{}), errDone: make(chan struct{}),
		aborted: make(chan struct{}), wake: make(chan struct{}, 1), room: make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	if sc, ok := local.(syscall.Conn); ok {
		p.raw, _ = sc.SyscallConn()
	}
	select {
	case <-c.goAway:
		return nil, fmt.Errorf("%w: %w", ErrNoStream, ErrGoingAway)
	case <-c.dead:
		return nil, fmt.Errorf("%w: %w", ErrNoStream, c.err)
	default:
	}
	reqID, portText := strconv.FormatUint(c.nextReq.Add(1), 10), strconv.Itoa(port)
	c.sendControl(func(e *encoder) {
		// IDs are taken here, under the writer's lock, so they reach the
		// wire in increasing order as the kubelet requires.
		p.errID, p.dataID = c.nextID, c.nextID+2
		c.nextID += 4
		c.mu.Lock()
		c.pairs[p.errID], c.pairs[p.dataID] = p, p
		c.mu.Unlock()
		e.synStream(p.errID, true, headerStreamType, corev1.StreamTypeError, headerPort, portText, headerRequestID, reqID)
		e.synStream(p.dataID, false, headerStreamType, corev1.StreamTypeData, headerPort, portText, headerRequestID, reqID)
	})
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	late := 0
	for {
		select {
		case <-p.replyCh:
			return p, nil
		case <-p.aborted:
			c.forget(p)
			if c.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ErrNoStream, c.err)
			}
			if errors.Is(p.abortErr, ErrNoStream) {
				// Not taken before a GOAWAY, or behind a held reader: the
				// connection goes to another tunnel, and the streams, if
				// the kubelet made them, end.
				p.reset()
				return nil, p.abortErr
			}
			return nil, fmt.Errorf("stream refused: %w", p.abortErr)
		case <-c.dead: // also when the SYN_STREAMs could not be written
			c.forget(p)
			return nil, fmt.Errorf("%w: %w", ErrNoStream, c.err)
		case <-timer.C:
			// A slow reply may only mean a busy kubelet (a burst of new
			// connections): the tunnel is dead only if a ping is not
			// answered either. A tunnel that answers pings but never this
			// stream fails this connection alone, in bounded time.
			if _, err := c.Ping(context.Background(), timeout); err != nil && !errors.Is(err, ErrBusy) && c.Err() == nil {
				c.kill(fmt.Errorf("no stream within %s, and %w", timeout, err))
				c.forget(p)
				return nil, fmt.Errorf("%w: no answer within %s", ErrNoStream, timeout)
			}
			if late++; late == maxLateReplies {
				c.forget(p)
				p.reset()
				return nil, fmt.Errorf("no reply to the stream within %s, though the tunnel answers pings", maxLateReplies*timeout)
			}
			timer.Reset(timeout)
		}
	}
}

// maxLateReplies bounds how many health timeouts a new stream may wait for
// its reply on a tunnel that still answers pings.
const maxLateReplies = 3

// forget removes the pair's streams from the session.
func (c *Conn) forget(p *pair) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pairs[p.errID] == p {
		delete(c.pairs, p.errID)
	}
	if c.pairs[p.dataID] == p {
		delete(c.pairs, p.dataID)
	}
}

// wait returns when the connection is over. As kubectl does, it ends when
// the pod's side ends, when the pod reports an error, or when it fails.
// When the pod's side ends first, its error (say, "connection refused")
// may still be on its way on the error stream, which the kubelet closes
// right after: wait for it a little.
func (p *pair) wait(timeout time.Duration) error {
	podDone, errDone := p.podDone, p.errDone
	var grace <-chan time.Time
	for {
		select {
		case <-podDone:
			if errDone == nil {
				return nil
			}
			podDone = nil
			t := time.NewTimer(timeout)
			defer t.Stop()
			grace = t.C
		case <-errDone:
			if err := p.podError(); err != nil {
				return err
			}
			if podDone == nil {
				return nil
			}
			errDone = nil // an empty error stream just means "no error"
		case <-grace:
			return nil
		case <-p.aborted:
			if err := p.podError(); err != nil {
				return err // the kubelet reset the streams after reporting
			}
			return p.abortErr
		}
	}
}

func (p *pair) podError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if msg := strings.TrimSpace(string(p.errText)); msg != "" {
		return &PodError{Port: p.port, Msg: msg}
	}
	return nil
}

// finish ends the pair on our side: the local connection is closed (its
// goroutines return at once) and the streams are forgotten.
func (p *pair) finish() {
	p.mu.Lock()
	p.finished = true
	for _, b := range p.queue {
		putChunk(b)
	}
	p.c.buffered.Add(-int64(p.queued))
	p.queue, p.queued = nil, 0
	p.spill.close()
	p.spill = nil
	p.mu.Unlock()
	close(p.stopped)
	p.local.Close()
	p.c.forget(p)
}

// tell ends the pair on the kubelet's side. After a clean end a half-close
// is all it needs to finish its side quietly; after a failure both streams
// are reset, unless the kubelet reset them itself (a reset is not answered
// with a reset).
func (p *pair) tell(err error) {
	p.mu.Lock()
	finSent, resetByPeer := p.finSent, p.resetByPeer
	p.finSent = true
	p.mu.Unlock()
	switch {
	case p.c.Err() != nil || resetByPeer:
	case err == nil:
		if !finSent { // queued, not waited for: ending never blocks
			p.c.sendControl(func(e *encoder) { e.fin(p.dataID) })
		}
	default:
		p.reset()
	}
}

// reset cancels both streams of the pair.
func (p *pair) reset() {
	p.c.sendControl(func(e *encoder) {
		e.rstStream(p.dataID, spdy.Cancel)
		e.rstStream(p.errID, spdy.Cancel)
	})
}

// abort ends the connection for err; the first reason wins.
func (p *pair) abort(err error) {
	p.once.abort.Do(func() {
		p.abortErr = err
		close(p.aborted)
	})
}

func (p *pair) replied(id uint32, fin bool) {
	if id == p.dataID {
		p.once.reply.Do(func() { close(p.replyCh) })
	}
	if fin {
		p.receive(id, nil, true)
	}
}

// receive takes the payloads of DATA frames from the reader, which must
// never block: bufs are only valid during the call.
func (p *pair) receive(id uint32, bufs [][]byte, fin bool) {
	if id == p.errID {
		p.mu.Lock()
		for _, b := range bufs {
			if room := maxErrorText - len(p.errText); room > 0 {
				p.errText = append(p.errText, b[:min(len(b), room)]...)
			}
		}
		p.mu.Unlock()
		if fin {
			p.once.err.Do(func() { close(p.errDone) })
		}
		return
	}
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	p.n.In.Add(int64(total))
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return
	}
	written := 0
	if len(p.queue) == 0 && !p.writing && p.spill.len() == 0 && p.raw != nil && total > 0 {
		written = tryWrite(p.raw, bufs)
	}
	if left := total - written; left > 0 {
		for i, b := range bufs { // skip what the socket took
			if written < len(b) {
				bufs[i] = b[written:]
				bufs = bufs[i:]
				break
			}
			written -= len(b)
		}
		p.keep(bufs, left)
	}
	if fin {
		p.podFIN = true
	}
	delivered := p.podFIN && len(p.queue) == 0 && p.spill.len() == 0 && !p.writing
	p.mu.Unlock()
	if delivered {
		p.closeWrite()
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// keep queues what the local client has not taken yet (n bytes in bufs);
// p.mu is held. It never drops data of a connection that goes on:
//
//   - in memory while this connection holds less than ClientBuffer and
//     the tunnel less than its budget, and nothing waits on disk;
//   - else at the end of the connection's overflow file, within the
//     forward's disk budget;
//   - else it waits, holding the session's reader, until the client has
//     read enough for it to fit in memory: the kubelet's writes then wait
//     in TCP, as every stream's do for kubectl. The tunnel takes no new
//     streams from then on (ErrClientsBehind), so new connections go to
//     another, and its health counts as good while it is held.
//
// A client that reads nothing at all is closed after StallTimeout (see
// deliver), which ends any wait here.
func (p *pair) keep(bufs [][]byte, n int) {
	held := false
	defer func() {
		if held {
			p.c.holding.Add(-1)
		}
	}()
	for {
		fits := p.queued+n <= p.c.limit && p.c.buffered.Load()+int64(n) <= p.c.budget
		if held { // past the tunnel's budget by at most what one read brings
			fits = p.queued == 0 || p.queued+n <= p.c.limit
		}
		if p.spill.len() == 0 && fits {
			for _, b := range bufs {
				p.enqueue(b)
			}
			return
		}
		if p.c.overflow.reserve(int64(n)) {
			if p.spill == nil {
				p.spill, _ = p.c.overflow.open() // on failure the overflow takes no more
			}
			if p.spill != nil && p.spill.write(bufs, n) == nil {
				return
			}
			if p.spill == nil {
				p.c.overflow.release(int64(n))
			}
			continue // the disk failed: try memory, or wait
		}
		if !held {
			held = true
			p.c.holding.Add(1)
			p.c.goingAway(ErrClientsBehind)
			p.c.refuseUnreplied(ErrClientsBehind)
			continue // held, it may fit at once
		}
		p.mu.Unlock()
		select {
		case <-p.room:
		case <-p.aborted:
		case <-p.stopped:
		case <-p.c.dead:
		}
		p.mu.Lock()
		select {
		case <-p.aborted:
			return // the connection is over: its data is not wanted
		case <-p.c.dead:
			return
		default:
		}
		if p.finished {
			return
		}
	}
}

// enqueue copies b to the end of the queue, filling the last chunk before
// taking another, so memory follows the bytes queued however small the
// frames; p.mu is held.
func (p *pair) enqueue(b []byte) {
	p.queued += len(b)
	p.c.buffered.Add(int64(len(b)))
	if n := len(p.queue); n > 0 {
		last := p.queue[n-1]
		k := copy(last[len(last):cap(last)], b)
		p.queue[n-1] = last[:len(last)+k]
		b = b[k:]
	}
	for len(b) > 0 {
		chunk := getChunk(len(b))
		k := copy(chunk, b)
		p.queue = append(p.queue, chunk[:k])
		b = b[k:]
	}
}

// drain writes queued pod data to the local client, for as long as the
// client takes it: first what waits in memory, then what waits on disk.
// Only this connection waits on a slow client.
func (p *pair) drain() {
	var disk []byte // a chunk of the overflow file on its way to the client
	defer func() {
		if disk != nil {
			putChunk(disk)
		}
	}()
	for {
		select {
		case <-p.wake:
		case <-p.stopped:
			return
		}
		for {
			p.mu.Lock()
			if p.finished {
				p.mu.Unlock()
				return
			}
			var (
				bufs   net.Buffers
				chunks [][]byte
				spill  = p.spill
				r, w   int64
			)
			switch {
			case len(p.queue) > 0:
				chunks = p.queue
				p.queue = nil
				bufs = slices.Clone(chunks) // WriteTo consumes its list
			case spill.len() > 0:
				r, w = spill.r, spill.w
			}
			if bufs == nil && r == w {
				p.writing = false
				delivered := p.podFIN
				p.mu.Unlock()
				if delivered {
					p.closeWrite()
				}
				break
			}
			p.writing = true
			p.mu.Unlock()

			if bufs == nil {
				if disk == nil {
					disk = getChunk(chunkSize)
				}
				m, err := spill.readAt(disk, r, w)
				if err != nil {
					p.abort(fmt.Errorf("read the overflow file: %w", err))
					return
				}
				bufs = net.Buffers{disk[:m]}
			}
			n, err := p.deliver(bufs)
			for _, b := range chunks {
				putChunk(b)
			}
			p.mu.Lock()
			if !p.finished { // finish has already taken everything off the books
				if chunks != nil {
					p.queued -= int(n)
					p.c.buffered.Add(-n)
				} else {
					spill.consumed(n)
				}
			}
			p.mu.Unlock()
			select {
			case p.room <- struct{}{}:
			default:
			}
			if err != nil {
				p.abort(err)
				return
			}
		}
	}
}

// deliver writes bufs to the local client. It gives up when the client
// has taken nothing at all for the stall timeout: a client that reads,
// however slowly, is waited for.
func (p *pair) deliver(bufs net.Buffers) (int64, error) {
	stall := p.c.stallTimeout
	step := max(stall/8, time.Millisecond) // how late a stall may be noticed
	var total int64
	last := time.Now() // when the client last took something
	for len(bufs) > 0 {
		p.local.SetWriteDeadline(time.Now().Add(min(step, stall-time.Since(last))))
		n, err := bufs.WriteTo(p.local)
		total += n
		if n > 0 {
			last = time.Now()
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return total, fmt.Errorf("write to client: %w", err)
			}
			if time.Since(last) >= stall {
				return total, fmt.Errorf("%w: nothing read for %s, %d bytes unread", ErrClientStalled, stall, p.unreadAfter(total))
			}
		}
	}
	p.local.SetWriteDeadline(time.Time{})
	return total, nil
}

// unreadAfter is how much of the pod's data waits for the client, less
// delivered bytes not yet taken off the books.
func (p *pair) unreadAfter(delivered int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(p.queued) + p.spill.len() - delivered
}

// closeWrite passes the pod's end on to the local client.
func (p *pair) closeWrite() {
	p.once.pod.Do(func() {
		if tc, ok := p.local.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		close(p.podDone)
	})
}

// upload carries the local client's data to the pod until it ends: its
// half-close is passed on; a reset or any other error fails the pair at
// once rather than when the pod next writes, also a reset that comes after
// the half-close (see awaitReset). The read buffer starts small
// (a thousand idle connections cost little) and grows while the client
// fills it (a bulk upload goes in large frames: fewer syscalls here, in
// TLS and at the kubelet).
func (p *pair) upload() {
	buf := make([]byte, dataHeaderLen+minUploadChunk)
	for {
		n, err := p.local.Read(buf[dataHeaderLen:])
		if n > 0 {
			if werr := p.c.w.data(p.dataID, false, buf[:dataHeaderLen+n]); werr != nil {
				p.abort(fmt.Errorf("tunnel: %w", werr))
				return
			}
			p.n.Out.Add(int64(n))
			if size := len(buf) - dataHeaderLen; n == size && size < maxUploadChunk {
				buf = make([]byte, dataHeaderLen+2*size)
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			p.mu.Lock()
			send := !p.finSent
			p.finSent = true
			p.mu.Unlock()
			if send {
				p.c.w.data(p.dataID, true, buf[:dataHeaderLen])
			}
			if p.raw != nil {
				if err := awaitReset(p.raw); err != nil {
					p.abort(fmt.Errorf("read from client after its half-close: %w", err))
				}
			}
			return
		case err != nil:
			p.abort(fmt.Errorf("read from client: %w", err))
			return
		}
	}
}

// Queued pod data lives in pooled chunks of the size the kubelet writes.
const chunkSize = 32 << 10

var chunks = sync.Pool{New: func() any { return new([chunkSize]byte) }}

func getChunk(n int) []byte {
	if n > chunkSize {
		return make([]byte, n)
	}
	return chunks.Get().(*[chunkSize]byte)[:]
}

func putChunk(b []byte) {
	if cap(b) == chunkSize {
		chunks.Put((*[chunkSize]byte)(b[:chunkSize]))
	}
}
