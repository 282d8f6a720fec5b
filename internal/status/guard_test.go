package status

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kforward/kforward/runner"
)

// A page whose name was made to resolve to 127.0.0.1 (DNS rebinding)
// reaches the endpoint with its own name as Host: refused. Scripts and
// curl name the address they dial.
func TestGuardRefusesForeignHostsOnLoopback(t *testing.T) {
	for _, c := range []struct {
		host  string
		local string // the address the request came in on; "": not known
		want  int
	}{
		{"127.0.0.1:7355", "", http.StatusOK},
		{"127.0.0.1", "", http.StatusOK},
		{"localhost:7355", "", http.StatusOK},
		{"LocalHost:7355", "", http.StatusOK},
		{"[::1]:7355", "", http.StatusOK},
		{"127.0.0.2:7355", "127.0.0.2:7355", http.StatusOK},
		{"evil.example:7355", "", http.StatusMisdirectedRequest},
		{"evil.example", "127.0.0.1:7355", http.StatusMisdirectedRequest},
		{"127.0.0.1.nip.io:7355", "[::1]:7355", http.StatusMisdirectedRequest},
		{"localhost.evil.example:7355", "127.0.0.1:7355", http.StatusMisdirectedRequest},
		{"", "127.0.0.1:7355", http.StatusMisdirectedRequest},
		// listening elsewhere on purpose (--status-addr 0.0.0.0:7355):
		// any name reaches it there, but not through loopback
		{"devbox.lan:7355", "192.168.1.5:7355", http.StatusOK},
		{"evil.example:7355", "127.0.0.1:7355", http.StatusMisdirectedRequest},
	} {
		t.Run(c.host+"@"+c.local, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/healthz", nil)
			req.Host = c.host
			if c.local != "" {
				local, err := net.ResolveTCPAddr("tcp", c.local)
				if err != nil {
					t.Fatal(err)
				}
				req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, local))
			}
			rec := httptest.NewRecorder()
			Handler(&fakeSource{}).ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Errorf("got %d %q, want %d", rec.Code, rec.Body, c.want)
			}
		})
	}
}

// Any web page can POST to 127.0.0.1; browsers say where it came from in
// Origin. Only pages of this machine may reload; curl sends no Origin.
func TestGuardRefusesCrossSiteReload(t *testing.T) {
	for _, c := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusOK},
		{"http://127.0.0.1:7355", http.StatusOK},
		{"http://localhost:3000", http.StatusOK},
		{"http://localhost", http.StatusOK},
		{"http://[::1]:7355", http.StatusOK},
		{"https://evil.example", http.StatusForbidden},
		{"http://127.0.0.1.nip.io:7355", http.StatusForbidden},
		{"http://localhost.evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden}, // sandboxed frames, file: pages
		{"file://", http.StatusForbidden},
	} {
		t.Run(c.origin, func(t *testing.T) {
			src := &fakeSource{reload: runner.Reload{Successful: true}}
			req := httptest.NewRequest("POST", "http://"+DefaultAddr+"/-/reload", nil)
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			rec := httptest.NewRecorder()
			Handler(src).ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != c.want {
				t.Errorf("got %d %q, want %d", rec.Code, body, c.want)
			}
			if reloaded := src.reloads > 0; reloaded != (c.want == http.StatusOK) {
				t.Errorf("reloaded: %v", reloaded)
			}
		})
	}
}
