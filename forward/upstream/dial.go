package upstream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	streamspdy "k8s.io/streaming/pkg/httpstream/spdy"

	gwebsocket "github.com/gorilla/websocket"

	"github.com/kforward/kforward/config"
)

const portForwardProtocol = "portforward.k8s.io"

// Dial upgrades a port-forward request to the pod at u (the pod's
// portforward subresource) and starts a session on it. Both transports
// honour ctx throughout, so a hung API server cannot hold a dial forever:
// Dial never outlasts ctx's deadline, and returns at most handshakeGrace
// (and Close's goodbyeTimeout) after ctx is cancelled.
func Dial(ctx context.Context, cfg *rest.Config, u *url.URL, t config.Transport, opts Options) (*Conn, error) {
	switch t {
	case config.SPDY:
		return dialSPDY(ctx, cfg, u, opts)
	case config.WebSocket:
		return dialWebSocket(ctx, cfg, u, opts)
	}
	up, wsErr := dialWebSocket(ctx, cfg, u, opts)
	if wsErr == nil || ctx.Err() != nil {
		return up, wsErr
	}
	// Fall back on any WebSocket failure: since client-go 0.36 upgrade
	// errors come from k8s.io/streaming and httpstream.IsUpgradeFailure
	// no longer recognises them, and a second try costs one round trip.
	up, err := dialSPDY(ctx, cfg, u, opts)
	if err != nil {
		return nil, fmt.Errorf("websocket: %v; spdy: %w", wsErr, err)
	}
	return up, nil
}

func dialSPDY(ctx context.Context, cfg *rest.Config, u *url.URL, opts Options) (*Conn, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	var tcp tcpDial
	// k8s.io/streaming dials an UpgradeTransport's DialContext directly and
	// ignores its Proxy: through a proxy, let it dial (http, https or
	// socks5) without our hook.
	proxy := proxyFor(cfg)
	rtConfig := streamspdy.RoundTripperConfig{UpgradeTransport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: tcp.dial}}
	if via, err := proxy(&http.Request{URL: u}); err != nil {
		return nil, err
	} else if via != nil {
		rtConfig = streamspdy.RoundTripperConfig{TLS: tlsConfig, Proxier: proxy}
	}
	rt, err := streamspdy.NewRoundTripperWithConfig(rtConfig)
	if err != nil {
		return nil, err
	}
	up := &spdyUpgrader{dialer: rt}
	wrapped, err := rest.HTTPWrappersForConfig(cfg, up) // authentication, user agent
	if err != nil {
		return nil, err
	}
	hctx, stop := withGrace(ctx, handshakeGrace)
	defer stop()
	req, err := http.NewRequestWithContext(hctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Stream-Protocol-Version", portForwardProtocol)
	resp, err := wrapped.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "SPDY/3.1") {
		err := upgradeError(hctx, resp, up.conn)
		up.conn.Close()
		return nil, err
	}
	if p := resp.Header.Get("X-Stream-Protocol-Version"); p != portForwardProtocol {
		up.conn.Close()
		return nil, fmt.Errorf("the server speaks %q, not %q", p, portForwardProtocol)
	}
	var c *Conn
	if tcp.bc == nil { // through a proxy: no batching beneath TLS
		c = newConn(up.conn, up.conn, nil, config.SPDY, opts)
	} else {
		c = newConn(up.conn, tcp.raw, tcp.bc, config.SPDY, opts)
	}
	return cancelled(ctx, c)
}

// spdyUpgrader sends the upgrade request and keeps the connection, with
// whatever the server sent after its response.
type spdyUpgrader struct {
	dialer *streamspdy.SpdyRoundTripper
	conn   net.Conn
}

func (s *spdyUpgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	conn, err := s.dialer.Dial(req) // proxy, TLS, and the request written
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(req.Context(), func() { conn.Close() })
	defer stop()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		if req.Context().Err() != nil { // closed by the AfterFunc
			return nil, context.Cause(req.Context())
		}
		return nil, err
	}
	if !stop() {
		conn.Close()
		return nil, context.Cause(req.Context())
	}
	s.conn = &bufferedConn{Conn: conn, r: br}
	return resp, nil
}

// bufferedConn reads what the server sent after the upgrade response
// first, then lets go of the reader that held it.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader // nil once empty
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// upgradeError describes a refused upgrade; an API status (say, the pod's
// 404) comes back as a StatusError. Its body is read from conn (nil: the
// body is in memory already) for as long as ctx lasts (the handshake's:
// see withGrace) and up to 64 KiB: a server may promise more than it sends
// (a 503 with a long Content-Length and a short body), and the read would
// otherwise outlast the dial's context, and Forward.Run with it.
func upgradeError(ctx context.Context, resp *http.Response, conn net.Conn) error {
	defer resp.Body.Close()
	if conn != nil {
		// Closing the connection ends a read in progress; closing the body
		// would wait for it, under the body's lock.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if ctx.Err() != nil {
		return fmt.Errorf("unable to upgrade connection: %s, and no complete answer: %w", resp.Status, context.Cause(ctx))
	}
	var status metav1.Status
	if json.Unmarshal(body, &status) == nil && status.Kind == "Status" {
		return &apierrors.StatusError{ErrStatus: status}
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = resp.Status
	}
	return fmt.Errorf("unable to upgrade connection: %s", msg)
}

// dialWebSocket upgrades with the tunnelling subprotocol, which carries
// the SPDY session inside binary WebSocket messages (the API server
// unwraps them). It dials with gorilla directly, as client-go's round
// tripper does, but beneath TLS it puts a bufConn, and its buffers fit
// the frames this package writes.
func dialWebSocket(ctx context.Context, cfg *rest.Config, u *url.URL, opts Options) (*Conn, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	wsURL := *u
	switch u.Scheme {
	case "https":
		wsURL.Scheme = "wss"
	case "http":
		wsURL.Scheme = "ws"
	default:
		return nil, fmt.Errorf("unknown url scheme %q", u.Scheme)
	}
	var tcp tcpDial
	protocol := "SPDY/3.1+" + portforward.PortForwardProtocolV1Name
	dialer := gwebsocket.Dialer{
		Proxy:           proxyFor(cfg),
		TLSClientConfig: tlsConfig,
		Subprotocols:    []string{protocol},
		ReadBufferSize:  4 << 10,               // frame headers: payloads go straight to our reader's buffer
		WriteBufferSize: maxUploadChunk + 1024, // a DATA frame fits one WebSocket frame
		WriteBufferPool: writeBuffers,          // held only while writing
	}
	// gorilla bounds the handshake by its context's deadline, not by its
	// end: a refusal whose body never comes (it reads up to 1 KiB of it)
	// would hold a stopping forward until the dial's timeout. So the
	// connection is closed when the handshake's context ends (ctx's
	// deadline, or handshakeGrace after ctx is cancelled), until the
	// handshake is over.
	hctx, stop := withGrace(ctx, handshakeGrace)
	defer stop()
	var unwatch func() bool
	dialer.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := tcp.dial(ctx, network, addr)
		if err == nil {
			unwatch = context.AfterFunc(ctx, func() { c.Close() })
		}
		return c, err
	}
	var ws *gwebsocket.Conn
	upgrade := roundTripper(func(req *http.Request) (*http.Response, error) {
		c, resp, err := dialer.DialContext(req.Context(), wsURL.String(), req.Header)
		if unwatch != nil && !unwatch() && err == nil {
			c.Close() // the handshake's time ran out as it completed
			err = context.Cause(req.Context())
		}
		if req.Context().Err() != nil && err != nil {
			return nil, fmt.Errorf("websocket upgrade: %w", context.Cause(req.Context()))
		}
		if err != nil {
			if errors.Is(err, gwebsocket.ErrBadHandshake) && resp != nil {
				return nil, upgradeError(req.Context(), resp, nil) // the API server's Status, a 404 included
			}
			return nil, err
		}
		if c.Subprotocol() != protocol {
			c.Close()
			return nil, fmt.Errorf("the server speaks %q, not %q", c.Subprotocol(), protocol)
		}
		ws = c
		return resp, nil
	})
	wrapped, err := rest.HTTPWrappersForConfig(cfg, upgrade) // authentication, user agent
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(hctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := wrapped.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	tunnel := portforward.NewTunnelingConnection("client", ws)
	raw, batch := ws.NetConn(), batcher(nil) // not dialled through our hook: no batching beneath TLS
	if tcp.bc != nil {
		raw, batch = tcp.raw, tcp.bc
	}
	c := newConn(tunnel, raw, batch, config.WebSocket, opts)
	c.goodbye = func(deadline time.Time) {
		ws.WriteControl(gwebsocket.CloseMessage, gwebsocket.FormatCloseMessage(gwebsocket.CloseNormalClosure, ""), deadline)
	}
	return cancelled(ctx, c)
}

// handshakeGrace is how long an upgrade may go on after its dial's context
// was cancelled (a forward stopped, by a reload or at shutdown). Once the
// request is sent, the API server dials the kubelet for it, and an upgrade
// cut short meanwhile is logged there as an error ("error dialing backend:
// context canceled", "context canceled", "... operation was canceled"; 28
// to 51 such lines in a run of e2e's TestFaultReloadStorm when the
// connection was closed as soon as the context ended). An upgrade takes a
// few milliseconds, so nearly every one completes within the grace, and
// its session is then ended in order (cancelled). Only a server that keeps
// the handshake longer has it cut, and Dial stays bounded.
const handshakeGrace = time.Second

// withGrace returns the context an upgrade's handshake runs under: it has
// ctx's values and deadline, and ends grace after ctx is cancelled, with
// ctx's cause. stop releases it; until then a goroutine waits on it.
func withGrace(ctx context.Context, grace time.Duration) (context.Context, func()) {
	base, cancelDeadline := context.WithoutCancel(ctx), context.CancelFunc(func() {})
	if deadline, ok := ctx.Deadline(); ok {
		base, cancelDeadline = context.WithDeadline(base, deadline)
	}
	hctx, cancel := context.WithCancelCause(base)
	unwatch := context.AfterFunc(ctx, func() {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-timer.C:
			cancel(context.Cause(ctx))
		case <-hctx.Done():
		}
	})
	return hctx, func() {
		unwatch()
		cancel(context.Canceled)
		cancelDeadline()
	}
}

// cancelled hands back c, a session just upgraded, unless ctx was
// cancelled during its handshake: then c is ended in order (Close: the
// goodbye, a half-close, the server's last bytes read), not dropped, which
// the API server would log as an error too ("Error proxying data from
// client to backend ... close 1006").
func cancelled(ctx context.Context, c *Conn) (*Conn, error) {
	if ctx.Err() == nil {
		return c, nil
	}
	err := fmt.Errorf("upgraded as the dial was cancelled: %w", context.Cause(ctx))
	c.Close(err)
	return nil, err
}

var writeBuffers = &sync.Pool{}

// tcpDial dials the API server for an upgrade and keeps the TCP connection
// (closing it ends the session at once, however dead the peer) and the
// bufConn over it, on which TLS runs.
type tcpDial struct {
	raw net.Conn
	bc  *bufConn
}

func (t *tcpDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	t.raw, t.bc = c, newBufConn(c)
	return t.bc, nil
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func proxyFor(cfg *rest.Config) func(*http.Request) (*url.URL, error) {
	if cfg.Proxy != nil {
		return cfg.Proxy
	}
	return http.ProxyFromEnvironment
}
