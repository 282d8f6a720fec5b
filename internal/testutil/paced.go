package testutil

import (
	"io"
	"time"
)

// PacedReader reads from R no faster than Rate bytes a second, counted from
// its first read, in pieces of a twentieth of a second's worth: a client
// that reads slower than its data comes (say, pg_dump compressing as it
// goes). N is how many bytes it has read.
type PacedReader struct {
	R     io.Reader
	Rate  int
	N     int64
	start time.Time
}

func (p *PacedReader) Read(b []byte) (int, error) {
	b = b[:min(len(b), pace(&p.start, p.N, p.Rate))]
	n, err := p.R.Read(b)
	p.N += int64(n)
	return n, err
}

// PacedWriter is PacedReader for a writer: W takes no more than Rate bytes
// a second.
type PacedWriter struct {
	W     io.Writer
	Rate  int
	N     int64
	start time.Time
}

func (p *PacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		k := min(len(b), pace(&p.start, p.N, p.Rate))
		n, err := p.W.Write(b[:k])
		p.N += int64(n)
		written += n
		b = b[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// pace waits until n bytes are due at rate since *start (set on the first
// call), and returns how many may go next.
func pace(start *time.Time, n int64, rate int) int {
	if start.IsZero() {
		*start = time.Now()
	}
	time.Sleep(time.Until(start.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))))
	return max(1, rate/20)
}
