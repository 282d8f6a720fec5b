package runner

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// The connections opened before a silence was found are closed; those
// opened since stay; a connection closed by its user is forgotten.
func TestConnsCloseBefore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		ln.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	}()

	cs := newConns(nil)
	old, err := cs.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	time.Sleep(time.Millisecond)
	silentAt := time.Now()
	young, err := cs.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer young.Close()

	if n := cs.closeBefore(silentAt); n != 1 {
		t.Fatalf("closed %d connections, want the one opened before the silence", n)
	}
	if _, err := old.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on the old connection: %v, want it closed", err)
	}
	if _, err := young.Write([]byte("x")); err != nil {
		t.Fatalf("write on the young connection: %v", err)
	}
	if n := cs.count(); n != 1 {
		t.Fatalf("%d connections kept, want 1", n)
	}
	young.Close()
	if n := cs.count(); n != 0 {
		t.Fatalf("%d connections kept after the last was closed, want 0", n)
	}
	if n := cs.closeBefore(time.Now()); n != 0 {
		t.Fatalf("closed %d connections, want none left", n)
	}
}
