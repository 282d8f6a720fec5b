package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream/spdy"

	"github.com/kforward/kforward/config"
)

// Sizes on the data path, chosen from profiles (see the package doc; and
// reader.go for the read buffers).
const (
	minUploadChunk = 4 << 10   // a local client is read into this much at first,
	maxUploadChunk = 128 << 10 // doubling up to this while it fills every read
	maxErrorText   = 64 << 10  // what is kept of an error stream's message
)

var (
	// ErrNoStream means the tunnel could not open a stream pair in time, or
	// died before it did: nothing was sent for the local connection, which
	// may try the next tunnel.
	ErrNoStream = errors.New("stream not created in time")
	// ErrClientStalled means a local client read nothing of the pod's data
	// waiting for it for the stall timeout; only that connection is closed.
	ErrClientStalled = errors.New("client is not reading")
	errClosed        = errors.New("session closed")
	// ErrGoingAway means the server sent GOAWAY: it takes no new streams.
	ErrGoingAway = errors.New("the server is going away")
	// ErrClientsBehind means a client fell so far behind the pod that the
	// tunnel's reading waits for it (memory and disk are full, see
	// Overflow): the tunnel takes no new streams.
	ErrClientsBehind = errors.New("a client is so far behind that the tunnel waits for it")
	// ErrBusy is Ping's answer when no echo came in time but the tunnel
	// moved bytes meanwhile: the echo may wait behind them on a slow link,
	// so the tunnel is not dead.
	ErrBusy = errors.New("no answer to ping yet, but the tunnel is moving data")
)

// Options tune a Conn.
type Options struct {
	// ClientBuffer is how much of the pod's data may wait in memory for one
	// local client that reads slower than the pod sends. All connections
	// of a Conn together hold at most BudgetFactor × ClientBuffer. Past
	// either, data waits on disk (Overflow), and past that in TCP: none is
	// dropped.
	ClientBuffer int
	// StallTimeout is how long a local client may read nothing at all of
	// the data waiting for it; then its connection alone is closed with
	// ErrClientStalled. Zero means config.DefaultStallTimeout.
	StallTimeout time.Duration
	// Overflow is the forward's disk budget for data beyond memory; nil
	// keeps none on disk.
	Overflow *Overflow
}

// BudgetFactor bounds a Conn's unread data across all its connections, as
// a multiple of Options.ClientBuffer.
const BudgetFactor = 8

// Conn is one upgraded port-forward connection to a pod: a SPDY/3.1 client
// session that carries a stream pair per local connection and answers
// pings. Create it with Dial; Close it when done.
type Conn struct {
	protocol     config.Transport
	raw          net.Conn                 // the TCP connection beneath: closing it does not wait for the peer
	goodbye      func(deadline time.Time) // the transport's last words on Close (a WebSocket close frame); may be nil
	w            *writer
	limit        int // unread bytes in memory per pair
	budget       int64
	overflow     *Overflow
	stallTimeout time.Duration

	buffered atomic.Int64 // unread bytes in memory across pairs
	holding  atomic.Int32 // pairs whose client the reader waits for (pair.keep)
	nextReq  atomic.Uint64
	nextPing atomic.Uint32

	mu     sync.Mutex
	pairs  map[uint32]*pair // by both stream IDs
	pings  map[uint32]chan struct{}
	nextID uint32 // next client stream ID (odd); guarded by w.mu, not mu
	closed bool   // Close is waiting for the flushers: start no more

	dead       chan struct{} // closed by Close
	deadOnce   sync.Once
	closing    atomic.Pointer[error] // Close's reason, once it has begun saying goodbye
	unanswered atomic.Bool           // the last ping went unanswered: Close says no goodbye
	err        error                 // why it died; set before dead is closed
	goAway     chan struct{}         // closed when the tunnel takes no new streams
	awayErr    error                 // why; set before goAway is closed
	awayOnce   sync.Once
	served     chan struct{} // closed once the reader has stopped
	flushers   sync.WaitGroup

	in frameReader // the reader goroutine's alone
}

// newConn starts a client session on c, an upgraded connection whose TCP
// connection is raw; if batch is not nil, the writer brackets each write
// with it (see bufConn).
func newConn(c, raw net.Conn, batch batcher, protocol config.Transport, opts Options) *Conn {
	if opts.ClientBuffer <= 0 {
		opts.ClientBuffer = config.DefaultClientBuffer
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = config.DefaultStallTimeout
	}
	holdLittleUnsent(raw)
	conn := &Conn{
		protocol: protocol, raw: raw,
		limit: opts.ClientBuffer, budget: int64(BudgetFactor * opts.ClientBuffer),
		overflow: opts.Overflow, stallTimeout: opts.StallTimeout,
		pairs: map[uint32]*pair{}, pings: map[uint32]chan struct{}{}, nextID: 1,
		dead: make(chan struct{}), goAway: make(chan struct{}), served: make(chan struct{}),
	}
	conn.w = newWriter(c, batch, func(err error) { conn.kill(fmt.Errorf("write: %w", err)) })
	conn.w.handoff = conn.startFlusher
	go conn.read(c)
	return conn
}

// Protocol is the transport the upgrade used.
func (c *Conn) Protocol() config.Transport { return c.protocol }

// Done is closed when the connection is dead; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.dead }

// GoingAway is closed when the tunnel takes no new streams: the server
// said so (ErrGoingAway), or a client fell so far behind that the
// tunnel's reading waits for it (ErrClientsBehind). Its open connections
// go on; new ones belong on another tunnel. AwayReason then says which.
func (c *Conn) GoingAway() <-chan struct{} { return c.goAway }

// AwayReason is why the tunnel takes no new streams, nil while it does.
func (c *Conn) AwayReason() error {
	select {
	case <-c.goAway:
		return c.awayErr
	default:
		return nil
	}
}

func (c *Conn) goingAway(reason error) {
	c.awayOnce.Do(func() {
		c.awayErr = reason
		close(c.goAway)
	})
}

// Err is why the connection died, nil while it lives.
func (c *Conn) Err() error {
	select {
	case <-c.dead:
		return c.err
	default:
		return nil
	}
}

// goodbyeTimeout bounds how long Close takes to part from a peer (the
// write in progress, the goodbye, the server's close): a dead one does not
// delay closing by more.
const goodbyeTimeout = 250 * time.Millisecond

// Close ends the connection for err, and waits until every goroutine of
// the connection has ended. Every local connection still carried ends
// with err.
//
// It parts from a healthy server as the server expects, within
// goodbyeTimeout: the transport's goodbye (a WebSocket close frame), then
// the end of what we send (a TCP half-close; none through a proxy, where
// the connection beneath TLS is not ours), then everything the server
// still sends, read and dropped until it closes its end. Only then is the
// TCP connection closed. Closing it earlier makes the kernel answer the
// server's last bytes (a ping's echo, TLS's close_notify) with a reset,
// and the API server logs every such tunnel as an error ("Error proxying
// data from client to backend ... connection reset by peer"; without the
// close frame, "... close 1006"). Closing the TCP connection never blocks,
// however dead the peer is. A server that left the last ping unanswered
// is not waited for: nothing would come.
func (c *Conn) Close(err error) {
	if c.Err() == nil && !c.unanswered.Load() {
		c.closing.Store(&err) // the reader sees the server's close, but the reason is ours
		deadline := time.Now().Add(goodbyeTimeout)
		parting := false // the server was told, and closes its end
		c.w.finish(err, deadline, func(deadline time.Time) {
			if c.goodbye != nil {
				c.goodbye(deadline)
				parting = true
			}
			if tc, ok := c.raw.(*net.TCPConn); ok {
				tc.CloseWrite()
				parting = true
			}
		})
		if parting {
			timer := time.NewTimer(time.Until(deadline))
			select {
			case <-c.served:
				drain(c.raw, deadline)
			case <-timer.C:
			}
			timer.Stop()
		}
	}
	c.kill(err)
	<-c.served
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.flushers.Wait()
}

// drain reads and drops what c still holds or receives until the peer
// closes, or until deadline.
func drain(c net.Conn, deadline time.Time) {
	c.SetReadDeadline(deadline)
	var b [512]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return
		}
	}
}

func (c *Conn) kill(err error) {
	c.deadOnce.Do(func() {
		if reason := c.closing.Load(); reason != nil {
			err = *reason
		}
		c.err = err
		c.raw.Close()
		close(c.dead)
	})
	c.w.stop(c.err) // writers waiting for room, or arriving later, get the error
}

// Streams is the number of streams the session has open.
func (c *Conn) Streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pairs)
}

// Ping sends a SPDY PING and waits for its echo, which comes from the
// kubelet's end of the session through the API server: proof that the
// whole path works, and nothing for the kubelet to log.
//
// A busy link is not a dead one: on a full uplink the PING waits behind
// data in the network, and on a full downlink its echo does. So when no
// echo comes within timeout but the tunnel moved data meanwhile (see
// moved), Ping returns ErrBusy, which callers count as alive. Only a
// tunnel that neither answers nor moves data for timeout is dead: then
// the error is another one. A tunnel whose reading waits for a slow
// client (ErrClientsBehind) cannot read the echo, and is alive for as
// long as that client reads (a stalled client is closed, see
// Options.StallTimeout).
func (c *Conn) Ping(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	id := 2*c.nextPing.Add(1) - 1 // client pings are odd
	echo := make(chan struct{})
	c.mu.Lock()
	c.pings[id] = echo
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pings, id)
		c.mu.Unlock()
	}()
	start, before := time.Now(), c.moved()
	c.sendControl(func(e *encoder) { e.ping(id) })
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-echo:
		c.unanswered.Store(false)
		return time.Since(start), nil
	case <-timer.C:
		if c.holding.Load() > 0 || c.moved().since(before) {
			return 0, ErrBusy
		}
		c.unanswered.Store(true)
		return 0, fmt.Errorf("no answer to ping within %s", timeout)
	case <-c.dead:
		return 0, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// progress is what a tunnel has moved so far, from the kernel where it
// tells (Linux: bytes the peer acknowledged, bytes received, bytes not
// sent yet), else from the session (bytes written, bytes read).
type progress struct {
	out, in uint64
	backlog bool // data still waits to go: the uplink, not the far end, sets the pace
}

// pingBytes is more than a PING takes on the wire (16 bytes in a TLS
// record, in a WebSocket frame): a tunnel that moved no more than that
// moved only the ping.
const pingBytes = 256

func (c *Conn) moved() progress {
	p := progress{out: uint64(c.w.sent.Load()), in: uint64(c.in.got.Load())}
	if acked, received, notSent, ok := linkCounters(c.raw); ok {
		p.out, p.in, p.backlog = acked, received, notSent > 0
	}
	p.backlog = p.backlog || c.w.writing()
	return p
}

// since reports whether the tunnel moved data between before and p:
// anything received proves the far end alive (only the kubelet's side
// sends on a tunnel), and bytes acknowledged do when data still waits to
// go, as on a full uplink. Acknowledgements alone, with nothing waiting,
// prove only that a kernel on the way took the bytes: a frozen API server,
// or a proxy whose network is gone, acknowledges small writes into its
// receive buffer for as long as that has room.
func (p progress) since(before progress) bool {
	return p.in > before.in || (p.backlog && p.out > before.out+pingBytes)
}

// sendControl queues a control frame without waiting for the connection to
// take it: the reader must never block on a write (the peer may be blocked
// writing to us), and callers that wait for an answer time out on their own.
func (c *Conn) sendControl(encode func(*encoder)) { c.queueControl(encode, false) }

// answer queues a control frame the server asked for (an echo, a
// refusal). Those are bounded (maxProvoked): a server that asks faster
// than it reads kills the session rather than grow its queue.
func (c *Conn) answer(encode func(*encoder)) { c.queueControl(encode, true) }

func (c *Conn) queueControl(encode func(*encoder), provoked bool) {
	mustFlush, err := c.w.queue(encode, provoked)
	switch {
	case errors.Is(err, errProvoked):
		c.kill(err)
	case mustFlush && !c.startFlusher():
		c.w.stop(errClosed) // nothing will be written any more
	}
}

// startFlusher runs the writer's flush on a goroutine of the session's;
// false once Close has begun waiting for them.
func (c *Conn) startFlusher() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.flushers.Add(1)
	go func() {
		defer c.flushers.Done()
		c.w.flush()
	}()
	return true
}

// read reads frames until the connection fails, then ends every pair.
func (c *Conn) read(r io.Reader) {
	defer close(c.served)
	c.in.init(r)
	err := c.readFrames(&c.in)
	c.in.close()
	if reason := c.closing.Load(); reason != nil {
		err = *reason // Close drains the connection, then closes it
	} else {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			err = errors.New("connection closed by the server")
		}
		c.kill(err)
		err = c.err
	}
	c.mu.Lock()
	pairs := make([]*pair, 0, len(c.pairs))
	for _, p := range c.pairs {
		pairs = append(pairs, p)
	}
	c.mu.Unlock()
	for _, p := range pairs {
		p.abort(fmt.Errorf("tunnel closed: %w", err))
	}
}

// readFrames parses SPDY/3.1 frames. DATA goes to its pair straight from
// the read buffer; control frames need at most their first 8 bytes: header
// blocks (of SYN_REPLY and HEADERS) are never decoded, since the kubelet's
// replies carry nothing a client needs.
//
// A frame's header stays in the reader until the frame is consumed, so
// that the reader has nothing buffered only between frames (see
// frameReader).
func (c *Conn) readFrames(in *frameReader) error {
	for {
		h, err := in.peek(frameHeaderLen)
		if err != nil {
			return err
		}
		first, second := binary.BigEndian.Uint32(h[:4]), binary.BigEndian.Uint32(h[4:])
		flags, length := uint8(second>>24), int(second&0xffffff)
		if first&0x80000000 == 0 {
			if err := c.readData(in, first&0x7fffffff, flags, length); err != nil {
				return err
			}
			continue
		}
		k := min(length, 8)
		b, err := in.peek(frameHeaderLen + k)
		if err != nil {
			return err
		}
		var p [8]byte
		copy(p[:], b[frameHeaderLen:])
		if err := in.discard(frameHeaderLen + length); err != nil {
			return err
		}
		c.control(spdy.ControlFrameType(first&0xffff), flags, p[:k])
	}
}

const frameHeaderLen = 8 // of every SPDY frame

func (c *Conn) readData(in *frameReader, id uint32, flags uint8, length int) error {
	c.mu.Lock()
	p := c.pairs[id]
	c.mu.Unlock()
	fin := spdy.DataFlags(flags)&spdy.DataFlagFin != 0
	if p == nil { // a stream we have already forgotten
		return in.discard(frameHeaderLen + length)
	}
	if frameHeaderLen+length <= maxPeek {
		// The whole frame, and with it any further frames of the same
		// stream already read: one write to the local client for them all.
		b, err := in.peek(frameHeaderLen + length)
		if err != nil {
			return err
		}
		bufs, used, last := [][]byte{b[frameHeaderLen:]}, len(b), fin
		if !fin && id == p.dataID {
			var more int
			bufs, more, last = sameStream(bufs, in.buffered()[used:], id)
			used += more
		}
		p.receive(id, bufs, last)
		in.discard(used)
	} else {
		in.discard(frameHeaderLen)
		for length > 0 { // larger than the buffer: in pieces
			n := min(length, maxPeek)
			b, err := in.peek(n)
			if err != nil {
				return err
			}
			length -= n
			p.receive(id, [][]byte{b}, fin && length == 0)
			in.discard(n)
		}
	}
	return nil
}

// sameStream appends to bufs the payloads of the complete DATA frames of
// stream id at the start of rest, and returns how many bytes of rest they
// take and whether the last one ended the stream.
func sameStream(bufs [][]byte, rest []byte, id uint32) ([][]byte, int, bool) {
	used := 0
	for len(rest) >= 8 {
		first, second := binary.BigEndian.Uint32(rest), binary.BigEndian.Uint32(rest[4:])
		n := int(second & 0xffffff)
		if first != id || len(rest) < 8+n { // another stream, a control frame, or not all here
			break
		}
		bufs = append(bufs, rest[8:8+n])
		used += 8 + n
		rest = rest[8+n:]
		if spdy.DataFlags(second>>24)&spdy.DataFlagFin != 0 {
			return bufs, used, true
		}
	}
	return bufs, used, false
}

func (c *Conn) control(typ spdy.ControlFrameType, flags uint8, p []byte) {
	if len(p) < 4 {
		return // SETTINGS and the like, or malformed: nothing we act on
	}
	id := binary.BigEndian.Uint32(p) & 0x7fffffff
	switch typ {
	case spdy.TypeSynReply:
		if pr := c.pair(id); pr != nil {
			pr.replied(id, spdy.ControlFlags(flags)&spdy.ControlFlagFin != 0)
		}
	case spdy.TypeRstStream:
		if pr := c.pair(id); pr != nil {
			status := spdy.RstStreamStatus(0)
			if len(p) == 8 {
				status = spdy.RstStreamStatus(binary.BigEndian.Uint32(p[4:]))
			}
			pr.mu.Lock()
			pr.resetByPeer = true
			pr.mu.Unlock()
			pr.abort(fmt.Errorf("stream reset by the kubelet (status %d)", status))
		}
	case spdy.TypePing:
		id = binary.BigEndian.Uint32(p) // ping IDs use all 32 bits
		if id%2 == 0 {                  // the server's: echo it
			c.answer(func(e *encoder) { e.ping(id) })
			return
		}
		c.mu.Lock()
		echo := c.pings[id]
		delete(c.pings, id)
		c.mu.Unlock()
		if echo != nil {
			close(echo)
		}
	case spdy.TypeSynStream: // the pod side opens no streams
		c.answer(func(e *encoder) { e.rstStream(id, spdy.RefusedStream) })
	case spdy.TypeGoAway:
		c.goingAway(ErrGoingAway)
		c.refuseAbove(id)
	}
}

func (c *Conn) pair(id uint32) *pair {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pairs[id]
}

// refuseUnreplied ends the pairs still waiting for their stream's reply,
// which a held reader would not read before the client it waits for
// catches up: their connections go to another tunnel at once.
func (c *Conn) refuseUnreplied(reason error) {
	c.mu.Lock()
	var refused []*pair
	for id, p := range c.pairs {
		if id == p.errID && !closed(p.replyCh) {
			refused = append(refused, p)
		}
	}
	c.mu.Unlock()
	for _, p := range refused {
		p.abort(fmt.Errorf("%w: %w", ErrNoStream, reason))
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// refuseAbove ends the pairs whose streams the server did not take before
// its GOAWAY (IDs above lastGood): nothing of theirs was processed, so
// their connections can be carried on another tunnel at once.
func (c *Conn) refuseAbove(lastGood uint32) {
	c.mu.Lock()
	var refused []*pair
	for id, p := range c.pairs {
		if id == p.errID && p.errID > lastGood {
			refused = append(refused, p)
		}
	}
	c.mu.Unlock()
	for _, p := range refused {
		p.abort(fmt.Errorf("%w: %w (last stream it took: %d)", ErrNoStream, ErrGoingAway, lastGood))
	}
}
