package upstream

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Overflow is where a forward's connections keep the pod's data that
// their clients have not read yet once memory is full (Options.ClientBuffer
// per connection, BudgetFactor × that per tunnel): a temporary file per
// connection, all of a forward's together at most limit bytes. Each file
// is removed from its directory as soon as it is made, so it disappears
// when it is closed or the process ends, however it ends; while it is
// open its space is given back as the client reads (see spill.consumed).
// Past the limit, or when the disk fails, the connection's data waits in
// the session: the tunnel's reading stops until the client catches up
// (see pair.keep).
type Overflow struct {
	dir   string
	limit int64
	used  atomic.Int64

	mu  sync.Mutex
	err error // the directory or the disk failed: spill no more
}

// NewOverflow returns a budget of limit bytes in dir (empty: the user's
// cache directory, else the system's temporary one). limit 0 spills
// nothing.
func NewOverflow(dir string, limit int64) *Overflow {
	if dir == "" {
		dir = defaultSpillDir()
	}
	return &Overflow{dir: dir, limit: limit}
}

// defaultSpillDir is on disk where the system keeps its temporary
// directory in memory (a tmpfs /tmp would spend the very memory the limit
// is meant to spare).
func defaultSpillDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		dir = filepath.Join(dir, "kforward")
		if os.MkdirAll(dir, 0o700) == nil {
			return dir
		}
	}
	return os.TempDir()
}

// Used is how many bytes the forward's connections hold on disk now.
func (o *Overflow) Used() int64 {
	if o == nil {
		return 0
	}
	return o.used.Load()
}

// Err is why the overflow stopped taking data (the disk failed), if it did.
func (o *Overflow) Err() error {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// reserve takes n bytes of the budget, or reports that they do not fit.
func (o *Overflow) reserve(n int64) bool {
	if o == nil || o.limit <= 0 || o.Err() != nil {
		return false
	}
	if o.used.Add(n) > o.limit {
		o.used.Add(-n)
		return false
	}
	return true
}

func (o *Overflow) release(n int64) {
	if o != nil && n > 0 {
		o.used.Add(-n)
	}
}

// failed records the first disk error: later data waits in memory and the
// session instead.
func (o *Overflow) failed(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

// spill is one connection's file: data is appended at w and read from r.
// Its writer (the session's reader) and its reader (the pair's drain)
// hold the pair's lock to move w and r; reading the bytes between r and w
// needs no lock, since nothing writes there.
type spill struct {
	o       *Overflow
	f       *os.File
	name    string // still in the directory (the system cannot remove an open file): remove on close
	r, w    int64
	punched int64 // bytes before this have been given back to the disk
}

// open makes the connection's file on first need.
func (o *Overflow) open() (*spill, error) {
	f, err := os.CreateTemp(o.dir, "kforward-overflow-*")
	if err != nil {
		o.failed(err)
		return nil, err
	}
	s := &spill{o: o, f: f}
	if os.Remove(f.Name()) != nil {
		s.name = f.Name()
	}
	return s, nil
}

func (s *spill) len() int64 {
	if s == nil {
		return 0
	}
	return s.w - s.r
}

// write appends bufs (n bytes, already reserved). On failure the
// reservation is returned and the overflow takes no more data.
func (s *spill) write(bufs [][]byte, n int) error {
	off := s.w
	for _, b := range bufs {
		if _, err := s.f.WriteAt(b, off); err != nil {
			s.o.release(int64(n))
			s.o.failed(err)
			return fmt.Errorf("overflow file: %w", err)
		}
		off += int64(len(b))
	}
	s.w = off
	return nil
}

// readAt reads the next unread bytes into p, from the drain goroutine,
// without the pair's lock: r and w as they were read under it.
func (s *spill) readAt(p []byte, r, w int64) (int, error) {
	n := int(min(int64(len(p)), w-r))
	m, err := s.f.ReadAt(p[:n], r)
	if m == n {
		err = nil
	} else if err == nil {
		err = errors.New("short read")
	}
	return m, err
}

// punchEvery is how much must have been read before its space goes back
// to the disk while more waits.
const punchEvery = 16 << 20

// consumed records that n more bytes were delivered; the caller holds the
// pair's lock. A file read to its end is emptied; a long one gives back
// what was read every punchEvery.
func (s *spill) consumed(n int64) {
	s.r += n
	s.o.release(n)
	switch {
	case s.r == s.w:
		s.f.Truncate(0)
		s.r, s.w, s.punched = 0, 0, 0
	case s.r-s.punched >= punchEvery:
		s.punched = punchHole(s.f, s.punched, s.r)
	}
}

// close gives the file and its budget back.
func (s *spill) close() {
	if s == nil {
		return
	}
	s.o.release(s.w - s.r)
	s.r = s.w
	s.f.Close()
	if s.name != "" {
		os.Remove(s.name)
	}
}
