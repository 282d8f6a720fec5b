package upstream

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"

	"github.com/moby/spdystream/spdy"
)

// maxPending bounds the frames queued behind a write in progress; past it
// DATA writers wait, which is the only backpressure SPDY here has.
const maxPending = 512 << 10

// writer serialises frames onto the upgraded connection without a goroutine
// of its own. A caller that finds the connection idle writes its frame
// itself; callers that arrive while a write is in progress append their
// frames to pending and return, and the writer in progress flushes them
// all in one write when its own ends. Under load that batches many small
// frames into one write (one TLS record, one WebSocket message, one
// syscall); when idle it costs nothing over a plain write.
type writer struct {
	conn   io.Writer
	batch  batcher     // may be nil
	failed func(error) // told of the first error: the session is dead

	mu      sync.Mutex
	space   sync.Cond // pending fell below maxPending, or err was set
	framer  *spdy.Framer
	encoded bytes.Buffer // the framer writes control frames here
	pending []byte
	spare   []byte
	busy    bool // a write is in progress
	err     error
}

// batcher gathers the writes beneath TLS between hold and release into one
// syscall: TLS writes every record (16 KiB at most) on its own.
type batcher interface {
	hold()
	release() error
}

func newWriter(conn io.Writer, batch batcher, failed func(error)) (*writer, error) {
	w := &writer{conn: conn, batch: batch, failed: failed}
	w.space.L = &w.mu
	// The framer keeps the header compression state, which must see header
	// blocks in the order they go on the wire: it is only used under mu.
	f, err := spdy.NewFramer(&w.encoded, nil)
	if err != nil {
		return nil, err
	}
	w.framer = f
	return w, nil
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
		w.pending = append(w.pending, frame...)
		w.mu.Unlock()
		return nil
	}
	w.busy = true
	w.mu.Unlock()
	return w.write(frame)
}

// queue encodes control frames under the lock, so that stream IDs and
// header blocks go on the wire in the order they were made, and appends
// them to pending. It reports whether the caller must call flush: nobody
// else is writing.
func (w *writer) queue(encode func(*spdy.Framer) error) (mustFlush bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return false
	}
	w.encoded.Reset()
	if err := encode(w.framer); err != nil {
		w.fail(err)
		return false
	}
	w.pending = append(w.pending, w.encoded.Bytes()...)
	if w.busy {
		return false
	}
	w.busy = true
	return true
}

// flush writes what is pending; the caller has set busy.
func (w *writer) flush() error { return w.write(nil) }

// write writes first, then whatever others queued meanwhile, until nothing
// is pending; the caller has set busy, and write clears it.
func (w *writer) write(first []byte) error {
	var err error
	if len(first) > 0 {
		err = w.send(first)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for err == nil && len(w.pending) > 0 {
		buf := w.pending
		w.pending = w.spare[:0]
		w.space.Broadcast()
		w.mu.Unlock()
		err = w.send(buf)
		w.mu.Lock()
		w.spare = buf[:0]
	}
	w.busy = false
	if err != nil {
		w.fail(err)
	}
	return w.err
}

// send writes b to the connection in as few syscalls as the batcher allows.
func (w *writer) send(b []byte) error {
	if w.batch == nil {
		_, err := w.conn.Write(b)
		return err
	}
	w.batch.hold()
	_, err := w.conn.Write(b)
	if rerr := w.batch.release(); err == nil {
		err = rerr
	}
	return err
}

// fail records the first error; every later write returns it.
func (w *writer) fail(err error) {
	if w.err == nil {
		w.err = err
		w.failed(err)
	}
	w.pending = nil
	w.space.Broadcast()
}
