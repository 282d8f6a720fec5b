package upstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// slowConn records every Write, taking a while over each, as a busy peer.
type slowConn struct {
	mu     sync.Mutex
	writes [][]byte
	delay  time.Duration
	err    error
}

func (c *slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// frames splits a written byte stream into DATA frames: stream ID → payloads.
func frames(t *testing.T, b []byte) map[uint32][]string {
	t.Helper()
	out := map[uint32][]string{}
	for len(b) > 0 {
		if len(b) < dataHeaderLen {
			t.Fatalf("%d bytes left, not a frame header", len(b))
		}
		id := binary.BigEndian.Uint32(b) & 0x7fffffff
		n := int(binary.BigEndian.Uint32(b[4:]) & 0xffffff)
		out[id] = append(out[id], string(b[dataHeaderLen:dataHeaderLen+n]))
		b = b[dataHeaderLen+n:]
	}
	return out
}

// Writers that arrive while a write is in progress have their frames
// written together after it, in fewer writes than frames, and each
// stream's frames stay in their order.
func TestWriterCombinesFrames(t *testing.T) {
	conn := &slowConn{delay: 2 * time.Millisecond}
	w := newWriter(conn, nil, func(error) {})
	const streams, each = 8, 50
	var wg sync.WaitGroup
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				payload := []byte{byte(s), byte(i)}
				if err := w.data(uint32(2*s+1), false, append(make([]byte, dataHeaderLen), payload...)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	w.mu.Lock()
	for w.busy { // the last writer may still be flushing what others queued
		w.mu.Unlock()
		time.Sleep(time.Millisecond)
		w.mu.Lock()
	}
	w.mu.Unlock()

	got := frames(t, bytes.Join(conn.writes, nil))
	for s := range streams {
		list := got[uint32(2*s+1)]
		if len(list) != each {
			t.Fatalf("stream %d: %d frames, want %d", 2*s+1, len(list), each)
		}
		for i, p := range list {
			if p != string([]byte{byte(s), byte(i)}) {
				t.Fatalf("stream %d frame %d is %v: out of order", 2*s+1, i, []byte(p))
			}
		}
	}
	if n := len(conn.writes); n >= streams*each {
		t.Fatalf("%d writes for %d frames: nothing was combined", n, streams*each)
	}
	t.Logf("%d frames from %d writers in %d writes", streams*each, streams, len(conn.writes))
}

// A failed write kills the session: the writer is told once, and every
// later frame gets the error instead of queueing forever.
func TestWriterFailure(t *testing.T) {
	conn := &slowConn{err: errors.New("broken pipe")}
	var failures []error
	w := newWriter(conn, nil, func(err error) { failures = append(failures, err) })
	for range 3 {
		if err := w.data(1, false, make([]byte, dataHeaderLen+4)); err == nil {
			t.Fatal("a write to a broken connection succeeded")
		}
	}
	if len(failures) != 1 {
		t.Fatalf("told of %d failures, want 1", len(failures))
	}
}

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	bytes  int
}

func (c *countConn) SetWriteDeadline(time.Time) error { return nil }

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.bytes += len(p)
	return len(p), nil
}

// Between hold and release, writes beneath TLS are gathered into one;
// outside, they go straight through (the handshake, a pong).
func TestBufConnBatches(t *testing.T) {
	under := &countConn{}
	bc := newBufConn(under)
	bc.Write([]byte("handshake"))
	if under.writes != 1 {
		t.Fatalf("%d writes outside a batch, want 1 straight through", under.writes)
	}
	bc.hold()
	for range 8 {
		bc.Write(make([]byte, 16<<10)) // TLS writes each record on its own
	}
	if under.writes != 1 {
		t.Fatalf("%d writes reached the socket while held", under.writes-1)
	}
	if err := bc.release(); err != nil {
		t.Fatal(err)
	}
	if under.writes != 2 || under.bytes != len("handshake")+8*(16<<10) {
		t.Fatalf("after release: %d writes, %d bytes; want the 8 records in 1 write", under.writes-1, under.bytes)
	}
}

// dataFrame encodes a DATA frame.
func dataFrame(id uint32, fin bool, payload string) []byte {
	b := make([]byte, dataHeaderLen, dataHeaderLen+len(payload))
	binary.BigEndian.PutUint32(b, id)
	n := uint32(len(payload))
	if fin {
		n |= 1 << 24
	}
	binary.BigEndian.PutUint32(b[4:], n)
	return append(b, payload...)
}

// The reader writes every complete frame of the same stream that one read
// brought in one go, and stops at another stream, a partial frame or a FIN.
func TestSameStream(t *testing.T) {
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	for _, tc := range []struct {
		name string
		rest []byte
		want []string
		used int
		fin  bool
	}{
		{"two more", join(dataFrame(3, false, "bb"), dataFrame(3, false, "ccc")), []string{"a", "bb", "ccc"}, 8 + 2 + 8 + 3, false},
		{"another stream", join(dataFrame(3, false, "bb"), dataFrame(5, false, "x"), dataFrame(3, false, "c")), []string{"a", "bb"}, 10, false},
		{"partial frame", join(dataFrame(3, false, "bb"), dataFrame(3, false, "ccc")[:9]), []string{"a", "bb"}, 10, false},
		{"fin", join(dataFrame(3, true, "bb"), dataFrame(3, false, "c")), []string{"a", "bb"}, 10, true},
		{"control frame", []byte{0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1}, []string{"a"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs, used, fin := sameStream([][]byte{[]byte("a")}, tc.rest, 3)
			var got []string
			for _, b := range bufs {
				got = append(got, string(b))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || used != tc.used || fin != tc.fin {
				t.Fatalf("got %q, %d bytes, fin %v; want %q, %d, %v", got, used, fin, tc.want, tc.used, tc.fin)
			}
		})
	}
}

// Queued pod data takes memory in proportion to its bytes, however small
// the frames it came in: 1,000 payloads of 100 bytes fill 4 chunks, not
// 1,000 (which would let a 16 MiB limit hold gigabytes).
func TestQueueMemoryFollowsBytes(t *testing.T) {
	p := &pair{c: &Conn{}}
	for range 1000 {
		p.enqueue(make([]byte, 100))
	}
	if p.queued != 100_000 || p.c.buffered.Load() != 100_000 {
		t.Fatalf("counted %d bytes (conn %d), want 100000", p.queued, p.c.buffered.Load())
	}
	held := 0
	for _, b := range p.queue {
		held += cap(b)
	}
	if want := 4 * chunkSize; held > want {
		t.Fatalf("%d bytes queued in %d chunks holding %d bytes, want at most %d", p.queued, len(p.queue), held, want)
	}
}
