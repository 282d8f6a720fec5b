package status

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// guard keeps web pages out of the endpoint. A page cannot read another
// origin's answers, but it can send requests, and two tricks reach a
// server on this machine's loopback address:
//
//   - DNS rebinding: a page's own name is made to resolve to 127.0.0.1,
//     so its requests come in on loopback with its name as Host. A
//     request that came in on a loopback address (or on one not known)
//     must name a loopback host: 127.0.0.1, [::1] or localhost.
//   - Cross-site requests: any page can POST to http://127.0.0.1:7355.
//     Browsers send Origin with every cross-origin POST; curl and scripts
//     send none. A POST whose Origin is not a page served from this
//     machine is refused.
//
// An endpoint listening on another address (explicitly, see CheckAddr)
// answers requests that come in there under any name.
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cameInOnLoopback(r) && !isLoopback(hostOnly(r.Host)) {
			http.Error(w, fmt.Sprintf("host %q is not this machine: kforward's status answers to 127.0.0.1, [::1] or localhost", r.Host),
				http.StatusMisdirectedRequest)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if origin := r.Header.Get("Origin"); origin != "" && !localOrigin(origin) {
				http.Error(w, fmt.Sprintf("origin %q may not %s here: only pages from localhost, 127.0.0.1 or [::1] over http may", origin, r.Method),
					http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// cameInOnLoopback reports whether r arrived on a loopback address, or on
// an address not known (a handler called directly).
func cameInOnLoopback(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true
	}
	ap, err := netip.ParseAddrPort(local.String())
	return err != nil || ap.Addr().Unmap().IsLoopback()
}

// hostOnly is the host of a Host header, without its port or brackets.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// localOrigin reports whether origin is http://localhost, 127.0.0.1 or
// [::1], with any port.
func localOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "http" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return false
	}
	host := u.Hostname()
	if !strings.EqualFold(host, "localhost") && host != "127.0.0.1" && host != "::1" {
		return false
	}
	if p := u.Port(); p != "" && strings.Trim(p, "0123456789") != "" {
		return false
	}
	return true
}
