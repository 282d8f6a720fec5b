package forward

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/transport/websocket"

	"github.com/kforward/kforward/config"
)

const (
	portForwardProtocol = "portforward.k8s.io"
	// spdyPingPeriod keeps idle tunnels from being cut by middleboxes.
	spdyPingPeriod = 5 * time.Second
)

// upstream is one upgraded connection to a pod, plus the TCP connection it
// runs on, which can be closed without blocking however dead the peer is.
type upstream struct {
	conn     httpstream.Connection
	raw      net.Conn
	protocol config.Transport // the one that worked
}

// dial upgrades a port-forward request to the pod. Both transports honour
// ctx throughout, so a hung API server cannot hold a dial forever.
func dial(ctx context.Context, cfg *rest.Config, u *url.URL, t config.Transport) (*upstream, error) {
	switch t {
	case config.SPDY:
		return dialSPDY(ctx, cfg, u)
	case config.WebSocket:
		return dialWebSocket(ctx, cfg, u)
	}
	up, wsErr := dialWebSocket(ctx, cfg, u)
	if wsErr == nil || ctx.Err() != nil {
		return up, wsErr
	}
	// Fall back on any WebSocket failure: since client-go 0.36 upgrade
	// errors come from k8s.io/streaming and httpstream.IsUpgradeFailure
	// no longer recognises them, and a second try costs one round trip.
	up, err := dialSPDY(ctx, cfg, u)
	if err != nil {
		return nil, fmt.Errorf("websocket: %v; spdy: %w", wsErr, err)
	}
	return up, nil
}

func dialSPDY(ctx context.Context, cfg *rest.Config, u *url.URL) (*upstream, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	var raw net.Conn
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: tlsConfig,
		Proxy:           proxyFor(cfg),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			raw = c
			return c, err
		},
	}
	rt, err := httpstreamspdy.NewRoundTripperWithConfig(httpstreamspdy.RoundTripperConfig{
		PingPeriod: spdyPingPeriod, UpgradeTransport: transport,
	})
	if err != nil {
		return nil, err
	}
	wrapped, err := rest.HTTPWrappersForConfig(cfg, rt)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	conn, _, err := spdy.Negotiate(rt, &http.Client{Transport: wrapped}, req, portForwardProtocol)
	if err != nil {
		if raw != nil {
			raw.Close()
		}
		return nil, err
	}
	return &upstream{conn: conn, raw: raw, protocol: config.SPDY}, nil
}

func dialWebSocket(ctx context.Context, cfg *rest.Config, u *url.URL) (*upstream, error) {
	rt, holder, err := websocket.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	wsURL := *u
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wsURL.String(), nil)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.Negotiate(rt, holder, req, "SPDY/3.1+"+portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, err
	}
	raw := ws.NetConn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	tunnel := portforward.NewTunnelingConnection("client", ws)
	conn, err := httpstreamspdy.NewClientConnectionWithPings(tunnel, spdyPingPeriod)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return &upstream{conn: conn, raw: raw, protocol: config.WebSocket}, nil
}

func proxyFor(cfg *rest.Config) func(*http.Request) (*url.URL, error) {
	if cfg.Proxy != nil {
		return cfg.Proxy
	}
	return http.ProxyFromEnvironment
}
