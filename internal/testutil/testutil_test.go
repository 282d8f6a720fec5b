package testutil

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBufferConcurrentWriters(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Errorf("%d lines, want 800", n)
	}
}

func TestEventually(t *testing.T) {
	start := time.Now()
	Eventually(t, time.Second, "50 ms to pass", func() bool { return time.Since(start) > 50*time.Millisecond })
	if time.Since(start) < 50*time.Millisecond {
		t.Error("returned before the condition held")
	}
}
