package upstream

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/kforward/kforward/config"
)

// slowUpgrades is an API server whose upgrades take answerAfter (never,
// if zero). It tells how each ended: "dropped" (the client closed before
// the answer: the API server logs "error dialing backend: context
// canceled"), or after the answer "closed in order" (the client said
// goodbye, a WebSocket close frame first, then closed its end) or
// "closed without a goodbye" (the API server logs "close 1006").
func slowUpgrades(t *testing.T, answerAfter time.Duration) (u *url.URL, ended <-chan string) {
	t.Helper()
	out := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		wait := answerAfter
		if wait == 0 {
			wait = time.Minute
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		if _, err := brw.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
			out <- "dropped"
			return
		}
		conn.SetReadDeadline(time.Time{})
		answer := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
		if key := r.Header.Get("Sec-WebSocket-Key"); key != "" {
			sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			answer += "Upgrade: websocket\r\nSec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n" +
				"Sec-WebSocket-Protocol: SPDY/3.1+" + portforward.PortForwardProtocolV1Name + "\r\n\r\n"
		} else {
			answer += "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: " + portForwardProtocol + "\r\n\r\n"
		}
		if _, err := conn.Write([]byte(answer)); err != nil {
			out <- "dropped"
			return
		}
		rest, err := io.ReadAll(brw)
		switch {
		case err != nil:
			out <- fmt.Sprintf("closed without a goodbye (%v)", err)
		case r.Header.Get("Sec-WebSocket-Key") != "" && (len(rest) == 0 || rest[0] != 0x88): // FIN and opcode 8
			out <- fmt.Sprintf("closed without a goodbye (% x)", rest)
		default:
			out <- "closed in order"
		}
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL + "/api/v1/namespaces/ns/pods/web/portforward")
	if err != nil {
		t.Fatal(err)
	}
	return u, out
}

// A dial cancelled while the API server works on the upgrade (a forward
// stopped during a reload) lets the upgrade complete, within
// handshakeGrace, and ends the new session in order: cut short, the API
// server would log it as an error. A server that takes longer is cut at
// the grace's end, and a dial's deadline is never extended.
func TestDialCancelledDuringUpgrade(t *testing.T) {
	for _, tr := range []config.Transport{config.WebSocket, config.SPDY} {
		for _, tc := range []struct {
			name        string
			answerAfter time.Duration // 0: never
			timeout     time.Duration // 0: cancelled after 100ms
			want        string
			within      time.Duration // after the cancel or the deadline
		}{
			{name: "answered within the grace", answerAfter: 400 * time.Millisecond, want: "closed in order", within: 400*time.Millisecond + goodbyeTimeout + 500*time.Millisecond},
			{name: "never answered", want: "dropped", within: handshakeGrace + 500*time.Millisecond},
			{name: "deadline", timeout: 100 * time.Millisecond, want: "dropped", within: 500 * time.Millisecond},
		} {
			t.Run(string(tr)+"/"+tc.name, func(t *testing.T) {
				u, ended := slowUpgrades(t, tc.answerAfter)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				var end time.Time
				if tc.timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
					end, _ = ctx.Deadline()
				} else {
					end = time.Now().Add(100 * time.Millisecond)
					time.AfterFunc(100*time.Millisecond, cancel)
				}
				c, err := Dial(ctx, &rest.Config{Host: u.Scheme + "://" + u.Host}, u, tr, Options{})
				took := time.Since(end)
				if c != nil {
					c.Close(errors.New("test over"))
				}
				switch {
				case err == nil:
					t.Errorf("Dial succeeded after its context ended")
				case tc.timeout == 0 && !errors.Is(err, context.Canceled):
					t.Errorf("Dial: %v, want the context's error", err)
				}
				if took > tc.within {
					t.Errorf("Dial returned %s after the context ended, want within %s", took, tc.within)
				}
				select {
				case got := <-ended:
					if got != tc.want {
						t.Errorf("the server saw the upgrade %s, want %s", got, tc.want)
					}
				case <-time.After(5 * time.Second):
					t.Errorf("the server never saw the connection end")
				}
			})
		}
	}
}
