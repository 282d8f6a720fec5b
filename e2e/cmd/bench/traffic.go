package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// dial connects to addr, which must be on 127.0.0.1: the harness only ever
// sends traffic to this machine. The connection's deadline is ctx's, and
// ctx's end (Ctrl-C) unblocks any read or write on it.
func dial(ctx context.Context, addr string) (net.Conn, func(), error) {
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		return nil, nil, fmt.Errorf("refusing to send traffic to %s: not 127.0.0.1", addr)
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	return c, func() { stop(); c.Close() }, nil
}

// request sends one HTTP/1.1 request with a body of n zero bytes (n > 0)
// over a new connection and reads the response. The body is read into
// sink if given (and its length returned), else returned.
func request(ctx context.Context, addr, method, path string, n int64, sink io.Writer) (string, int64, error) {
	c, done, err := dial(ctx, addr)
	if err != nil {
		return "", 0, err
	}
	defer done()
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n", method, path)
	if n > 0 {
		head += "Content-Length: " + strconv.FormatInt(n, 10) + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		return "", 0, err
	}
	if n > 0 {
		buf := make([]byte, 256<<10)
		for left := n; left > 0; {
			k, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return "", 0, err
			}
			left -= int64(k)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 256<<10), nil)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if sink != nil {
		got, err := io.CopyBuffer(sink, resp.Body, make([]byte, 256<<10))
		return "", got, err
	}
	body, err := io.ReadAll(resp.Body)
	return string(body), int64(len(body)), err
}

// get returns the body of GET path.
func get(ctx context.Context, addr, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, _, err := request(ctx, addr, http.MethodGet, path, 0, nil)
	return body, err
}

// transferTimeout bounds one transfer of n bytes: generous (at least
// 1 MB/s), so only a stuck forwarder hits it.
func transferTimeout(n int64) time.Duration { return 30*time.Second + time.Duration(n/1e6)*time.Second }

// download fetches n bytes through addr and checks they all came.
func download(ctx context.Context, addr string, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(n))
	defer cancel()
	_, got, err := request(ctx, addr, http.MethodGet, "/bytes/"+strconv.FormatInt(n, 10), 0, io.Discard)
	if err == nil && got != n {
		err = fmt.Errorf("downloaded %d bytes, want %d", got, n)
	}
	return err
}

// upload sends n bytes through addr to the backend's sink, which answers
// how many it read.
func upload(ctx context.Context, addr string, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(n))
	defer cancel()
	body, _, err := request(ctx, addr, http.MethodPost, "/sink", n, nil)
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(body); got != strconv.FormatInt(n, 10) {
		return fmt.Errorf("backend read %s bytes, want %d", got, n)
	}
	return nil
}

// echoOnce opens a connection, sends n bytes, reads them back and closes.
func echoOnce(ctx context.Context, addr string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, done, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer done()
	return exchange(c, bytes.Repeat([]byte{'x'}, n), make([]byte, n))
}

// exchange writes msg and reads its echo into buf.
func exchange(c net.Conn, msg, buf []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(msg, buf) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
