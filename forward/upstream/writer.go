package upstream

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream/spdy"
)

// maxPending bounds the DATA frames queued behind a write in progress;
// past it DATA writers wait, which is the only backpressure SPDY here has.
const maxPending = 512 << 10

// maxSend bounds one write of queued DATA (whole frames, so one upload
// frame of up to maxUploadChunk may exceed it): between two such writes,
// control frames queued meanwhile go first. With TCP_NOTSENT_LOWAT (see
// lowat.go) the kernel holds little unsent, so this bounds how long a PING,
// its echo or a new stream waits behind an upload on a slow uplink.
const maxSend = 64 << 10

// maxProvoked bounds the control frames the server made us owe it (echoes
// of its PINGs, refusals of its SYN_STREAMs) while they wait to be
// written. A server that keeps asking and stops reading would otherwise
// grow the queue without end; past the bound the session is dead.
const maxProvoked = 64 << 10

// batches pools the buffers that writes are gathered in (the writer's
// pending frames, bufConn's TLS records), so that a connection holds one
// only while it writes.
var batches sync.Pool // of *[]byte

func getBatch() []byte {
	if b, ok := batches.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, 4<<10)
}

// putBatch gives b back for another write, unless it grew larger than
// any batch of ours (maxPending and a frame, in TLS records).
func putBatch(b []byte) {
	if cap(b) == 0 || cap(b) > 2*maxPending {
		return
	}
	b = b[:0]
	batches.Put(&b)
}

// writer serialises frames onto the upgraded connection without a goroutine
// of its own. A caller that finds the connection idle writes its frame
// itself; callers that arrive while a write is in progress append their
// frames to a queue and return, and the writer in progress flushes them
// when its own write ends. Under load that batches many small frames into
// one write (one TLS record, one WebSocket message, one syscall); when idle
// it costs nothing over a plain write.
//
// Control frames have a queue of their own, written ahead of queued DATA
// (and between the pieces of a large batch of it, see maxSend): a PING or
// its echo, a new stream's SYN_STREAMs and a RST_STREAM never wait behind
// an upload. Reordering is safe: a stream's SYN_STREAM is queued before
// any of its DATA exists, and DATA that follows its stream's RST_STREAM is
// dropped by the kubelet's spdystream ("data frame gone away").
type writer struct {
	conn    io.Writer
	batch   batcher     // may be nil
	failed  func(error) // told of the first error: the session is dead
	handoff func() bool // starts a goroutine that calls flush; false if it cannot

	mu       sync.Mutex
	space    sync.Cond // pending fell below maxPending, or err was set
	enc      encoder   // control frames; its header stream follows the wire's order
	ctrl     []byte    // control frames, written first
	provoked int       // bytes of ctrl that answer the server (maxProvoked)
	pending  []byte    // DATA frames
	spare    []byte
	busy     bool // a write is in progress
	err      error

	sent atomic.Int64 // bytes handed to conn: progress where the socket cannot tell (see Conn.moved)
}

// batcher gathers the writes beneath TLS between hold and release into one
// syscall: TLS writes every record (16 KiB at most) on its own.
type batcher interface {
	hold()
	release() error
}

func newWriter(conn io.Writer, batch batcher, failed func(error)) *writer {
	w := &writer{conn: conn, batch: batch, failed: failed}
	w.space.L = &w.mu
	return w
}

const dataHeaderLen = 8

// data writes one DATA frame: frame[:8] is left for the header, which is
// filled in here, and frame[8:] is the payload. It returns once the frame
// is written or queued behind another write.
func (w *writer) data(id uint32, fin bool, frame []byte) error {
	binary.BigEndian.PutUint32(frame, id&0x7fffffff)
	length := uint32(len(frame) - dataHeaderLen)
	if fin {
		length |= uint32(spdy.DataFlagFin) << 24
	}
	binary.BigEndian.PutUint32(frame[4:], length)

	w.mu.Lock()
	for w.err == nil && w.busy && len(w.pending) >= maxPending {
		w.space.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if w.busy {
		if w.pending == nil {
			w.pending = getBatch()
		}
		w.pending = append(w.pending, frame...)
		w.mu.Unlock()
		return nil
	}
	w.busy = true
	w.mu.Unlock()
	return w.write(frame)
}

// errProvoked is why a session dies whose server asked for more answers
// than it read (maxProvoked).
var errProvoked = errors.New("the server asks for more answers (pings, refused streams) than it reads")

// queue encodes control frames at the end of the control queue, under the
// lock, so that stream IDs and header blocks go on the wire in the order
// they were made. It reports whether the caller must call flush: nobody
// else is writing. provoked frames answer the server and are bounded by
// maxProvoked: past it queue fails the writer with errProvoked.
func (w *writer) queue(encode func(*encoder), provoked bool) (mustFlush bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return false, w.err
	}
	if w.ctrl == nil {
		w.ctrl = getBatch()
	}
	before := len(w.ctrl)
	w.enc.b = w.ctrl
	encode(&w.enc)
	w.ctrl, w.enc.b = w.enc.b, nil
	if provoked {
		if w.provoked += len(w.ctrl) - before; w.provoked > maxProvoked {
			w.fail(errProvoked)
			return false, errProvoked
		}
	}
	if w.busy {
		return false, nil
	}
	w.busy = true
	return true, nil
}

// flush writes what is pending; the caller has set busy.
func (w *writer) flush() error { return w.write(nil) }

// maxRounds bounds how many batches of other writers' frames one caller
// writes before it hands the rest to a goroutine of the session's: a
// connection that has ended must not stay busy flushing another's upload.
const maxRounds = 4

// write writes first, then whatever others queued meanwhile (control
// frames first), until nothing is queued or it has done maxRounds; the
// caller has set busy, and write clears it or hands it on.
func (w *writer) write(first []byte) error {
	var err error
	if len(first) > 0 {
		err = w.sendData(first)
	}
	w.mu.Lock()
	for rounds := 0; err == nil && w.err == nil && (len(w.ctrl) > 0 || len(w.pending) > 0); rounds++ {
		if rounds == maxRounds && w.handoff != nil && w.handoff() {
			w.mu.Unlock()
			return nil // busy passes to the new flusher
		}
		buf := w.pending
		w.pending = w.spare[:0]
		w.space.Broadcast()
		w.mu.Unlock()
		err = w.sendData(buf)
		w.mu.Lock()
		w.spare = buf[:0]
	}
	// Idle now, or failed: keep no buffer (an idle connection holds none).
	if len(w.pending) == 0 {
		putBatch(w.pending)
		w.pending = nil
	}
	if len(w.ctrl) == 0 {
		putBatch(w.ctrl)
		w.ctrl = nil
	}
	putBatch(w.spare)
	w.spare = nil
	w.busy = false
	w.space.Broadcast() // finish may wait for the write to end
	told := err != nil && w.fail(err)
	werr := w.err
	w.mu.Unlock()
	if told {
		w.failed(err)
	}
	return werr
}

// sendData writes the DATA frames in b, at most maxSend at a time (whole
// frames), each preceded by the control frames queued by then.
func (w *writer) sendData(b []byte) error {
	for {
		if err := w.sendControl(); err != nil {
			return err
		}
		if len(b) == 0 {
			return nil
		}
		n := frameRun(b, maxSend)
		if err := w.send(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
}

// sendControl writes the control frames queued so far, if any.
func (w *writer) sendControl() error {
	w.mu.Lock()
	ctrl := w.ctrl
	w.ctrl, w.provoked = nil, 0
	w.mu.Unlock()
	if len(ctrl) == 0 {
		putBatch(ctrl)
		return nil
	}
	err := w.send(ctrl)
	putBatch(ctrl)
	return err
}

// frameRun is the length of the whole DATA frames at the start of b that
// fit in limit, or of the first frame if it alone is longer.
func frameRun(b []byte, limit int) int {
	n := 0
	for n+dataHeaderLen <= len(b) {
		next := n + dataHeaderLen + int(binary.BigEndian.Uint32(b[n+4:])&0xffffff)
		if next > len(b) || (n > 0 && next > limit) {
			break
		}
		n = next
	}
	if n == 0 {
		return len(b) // not frames we made: write it as it is
	}
	return n
}

// send writes b to the connection in as few syscalls as the batcher allows.
func (w *writer) send(b []byte) error {
	if w.batch == nil {
		n, err := w.conn.Write(b)
		w.sent.Add(int64(n))
		return err
	}
	w.batch.hold()
	_, err := w.conn.Write(b)
	if rerr := w.batch.release(); err == nil {
		err = rerr
	}
	if err == nil {
		w.sent.Add(int64(len(b)))
	}
	return err
}

// finish stops the writer for err and, once the write in progress has
// ended (it is not waited for past deadline), makes last the final write:
// the goodbye of Conn.Close. A write that does not end by deadline (a dead
// peer) is left to fail when the connection is closed.
func (w *writer) finish(err error, deadline time.Time, last func(deadline time.Time)) {
	w.mu.Lock()
	healthy := w.err == nil
	w.fail(err)
	w.mu.Unlock()
	if !healthy || last == nil {
		return
	}
	idle := make(chan struct{})
	go func() { // ends when the write in progress does, or fails at the close
		defer close(idle)
		w.mu.Lock()
		defer w.mu.Unlock()
		for w.busy {
			w.space.Wait()
		}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-idle:
		last(deadline)
	case <-timer.C:
	}
}

// writing reports whether a write is in progress or queued: the
// connection has not taken everything yet.
func (w *writer) writing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.busy
}

// stop fails the writer from outside (the session died): waiting writers
// wake up, and every later write returns err.
func (w *writer) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail(err)
}

// fail records the first error and reports whether it was the first; w.mu
// is held. The caller tells w.failed after unlocking.
func (w *writer) fail(err error) bool {
	first := w.err == nil
	if first {
		w.err = err
	}
	w.pending, w.ctrl = nil, nil
	w.space.Broadcast()
	return first
}
