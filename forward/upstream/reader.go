package upstream

import (
	"io"
	"sync"
	"sync/atomic"
)

// Most tunnels are idle most of the time, and an idle tunnel is a read
// that waits: whatever buffer it waits with is what the tunnel costs. So
// the large read buffers of the data path are taken from a pool while
// data flows and given back when it stops (see the package doc).

// readBufferSize is the large buffer a busy tunnel reads into, at each of
// the two levels (the session's frames; the socket beneath TLS).
const readBufferSize = 128 << 10

// readBuffers holds the large buffers of tunnels that are not reading.
var readBuffers bufferPool

// bufferPool is a free list of large read buffers, bounded by
// maxFreeBuffers. Not a sync.Pool: that one drops a quarter of what it is
// given under the race detector, and a fresh 128 KiB buffer there costs
// enough to slow a busy session's reader severalfold (e2e TestStalledClient
// under make test's -race: slowest answer beside a stalled client 0.7-1.0 s
// with sync.Pool, 0.4 s with none; without -race no difference). A free
// list gives the same buffer back every time, and what it keeps is bounded.
type bufferPool struct {
	mu   sync.Mutex
	free []*[readBufferSize]byte
}

// maxFreeBuffers bounds what the free list keeps: 2 MiB, whatever the
// number of tunnels. Buffers beyond it are left to the garbage collector.
const maxFreeBuffers = 16

func (p *bufferPool) Get() *[readBufferSize]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return b
	}
	return new([readBufferSize]byte)
}

func (p *bufferPool) Put(b *[readBufferSize]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < maxFreeBuffers {
		p.free = append(p.free, b)
	}
}

// smallReadSize is what an idle session waits with: enough for a ping and
// its answer, a stream's reply or reset, and the frames of short
// exchanges.
const smallReadSize = 1 << 10

// frameReader buffers the upgraded connection for the frame parser, like a
// bufio.Reader whose buffer is large only during a burst. With nothing
// buffered it reads into small, which lives in the Conn: a read that
// waits, as an idle session's does, never holds a large buffer. A frame
// that does not fit small, or the rest of a frame after a read that filled
// small, takes a large buffer from readBuffers; it goes back as soon as
// everything read has been consumed. While a burst goes on, that costs a
// read into small and a copy of it (at most smallReadSize) each time the
// large buffer runs empty, not a syscall: beneath is TLS or the WebSocket
// tunnel, which hold what the socket gave.
type frameReader struct {
	src   io.Reader
	small [smallReadSize]byte
	large *[readBufferSize]byte // while a burst lasts; nil otherwise
	buf   []byte                // small[:] or large[:]
	r, w  int                   // buf[r:w] is read and not consumed
	full  bool                  // the last read filled small, and a frame goes on: more is coming
	err   error
	got   atomic.Int64 // bytes read from src: progress where the socket cannot tell (Conn.moved)
	empty int          // reads in a row that returned nothing
}

// maxEmptyReads is how many reads in a row may return nothing and no
// error before the reader gives up, as bufio's does.
const maxEmptyReads = 100

func (f *frameReader) init(src io.Reader) {
	f.src = src
	f.buf = f.small[:]
}

// maxPeek is the most peek returns: a frame longer than that is read in
// pieces.
const maxPeek = readBufferSize

// peek returns the next n bytes (at most maxPeek) without consuming them;
// they stay valid until the next call of peek or discard that reads.
func (f *frameReader) peek(n int) ([]byte, error) {
	for f.w-f.r < n {
		if f.err != nil {
			return nil, f.err
		}
		if f.r == f.w { // all consumed: this read may wait, with small
			f.r, f.w = 0, 0
			f.full = false
			if f.large != nil {
				f.shrink()
			}
		}
		switch {
		case f.large == nil && (n > len(f.small) || f.full):
			f.grow()
		case f.r+n > len(f.buf): // room at the front: move what is left there
			f.w = copy(f.buf, f.buf[f.r:f.w])
			f.r = 0
		}
		m, err := f.src.Read(f.buf[f.w:])
		if m < 0 || m > len(f.buf)-f.w {
			panic("upstream: invalid read count")
		}
		f.full = f.large == nil && f.w+m == len(f.buf)
		f.w += m
		f.got.Add(int64(m))
		switch {
		case err != nil:
			f.err = err
		case m > 0:
			f.empty = 0
		default:
			// TLS and the tunnel never return 0, nil; a plain pipe does for
			// a peer's empty write, which io.Reader allows now and then.
			if f.empty++; f.empty == maxEmptyReads {
				f.err = io.ErrNoProgress
			}
		}
	}
	return f.buf[f.r : f.r+n], nil
}

// buffered returns what has been read and not consumed, without reading.
func (f *frameReader) buffered() []byte { return f.buf[f.r:f.w] }

// discard consumes n bytes, reading them first if they are not buffered.
func (f *frameReader) discard(n int) error {
	for n > 0 {
		if f.r == f.w {
			if _, err := f.peek(min(n, maxPeek)); err != nil {
				return err
			}
		}
		k := min(n, f.w-f.r)
		f.r += k
		n -= k
	}
	return nil
}

// grow moves what is buffered into a large buffer.
func (f *frameReader) grow() {
	f.large = readBuffers.Get()
	f.w = copy(f.large[:], f.buf[f.r:f.w])
	f.r = 0
	f.buf = f.large[:]
	f.full = false
}

// shrink gives the large buffer back; nothing is buffered.
func (f *frameReader) shrink() {
	readBuffers.Put(f.large)
	f.large = nil
	f.buf = f.small[:]
}

// close gives back the large buffer, if any; the reader is not used again.
func (f *frameReader) close() {
	if f.large != nil {
		f.shrink()
	}
	f.r, f.w = 0, 0
}
