package kube

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenServer answers 200 to the token it accepts and 401 to any other,
// and records the tokens it was sent.
type tokenServer struct {
	mu     sync.Mutex
	accept string
	seen   []string
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	s.seen = append(s.seen, tok)
	ok := tok == s.accept
	s.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"major":"1","minor":"36","gitVersion":"v1.36.3"}`))
}

func (s *tokenServer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[len(s.seen)-1]
}

func tokenKubeconfig(server, token string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "` + server + `", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: ` + token + `}
contexts:
- name: dev
  context: {cluster: c, user: u}
current-context: dev
`
}

// A token rotated in the kubeconfig on disk is sent from the next request
// on, by the same client: no restart.
func TestTokenRotatedOnDisk(t *testing.T) {
	srv := &tokenServer{accept: "token-one"}
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	p := writeKubeconfig(t, tokenKubeconfig(ts.URL, "token-one"))
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-one" {
		t.Fatalf("first request: %v, sent %q", err, srv.last())
	}

	srv.mu.Lock()
	srv.accept = "token-two" // token-one is revoked
	srv.mu.Unlock()
	if err := os.WriteFile(p, []byte(tokenKubeconfig(ts.URL, "token-two")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-two" {
		t.Errorf("after rotation: %v, sent %q", err, srv.last())
	}
}

// A change the file's size and time do not show (same length, time set
// back) is read after the server's first 401.
func TestTokenReadAgainAfterUnauthorized(t *testing.T) {
	srv := &tokenServer{accept: "token-one"}
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	p := writeKubeconfig(t, tokenKubeconfig(ts.URL, "token-one"))
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.accept = "token-two"
	srv.mu.Unlock()
	if err := os.WriteFile(p, []byte(tokenKubeconfig(ts.URL, "token-two")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, time.Time{}, before.ModTime()); err != nil {
		t.Fatal(err)
	}
	_, err = c.Client.Discovery().ServerVersion()
	if err == nil || srv.last() != "token-one" {
		t.Fatalf("unchanged stamp: %v, sent %q; want token-one refused", err, srv.last())
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-two" {
		t.Errorf("after the 401: %v, sent %q", err, srv.last())
	}
}

// A kubeconfig caught half-written keeps the token in use.
func TestTokenKeptWhileFileUnreadable(t *testing.T) {
	srv := &tokenServer{accept: "token-one"}
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	p := writeKubeconfig(t, tokenKubeconfig(ts.URL, "token-one"))
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("apiVersion: v1\nkind: Con"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-one" {
		t.Errorf("half-written file: %v, sent %q", err, srv.last())
	}
}

// No token in the kubeconfig: nothing is wrapped, nothing is sent.
func TestNoTokenNothingFollowed(t *testing.T) {
	p := writeKubeconfig(t, strings.Replace(tokenKubeconfig("https://127.0.0.1:1", "x"), "user: {token: x}", "user: {}", 1))
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.WrapTransport != nil || c.Config.BearerToken != "" {
		t.Errorf("wrapped %v, token %q", c.Config.WrapTransport != nil, c.Config.BearerToken)
	}
}

// The kubeconfig's current context switched to another server: this
// client keeps its server's token and never sends the other one.
func TestTokenNotTakenFromAnotherContext(t *testing.T) {
	srv := &tokenServer{accept: "token-one"}
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	p := writeKubeconfig(t, tokenKubeconfig(ts.URL, "token-one"))
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	switched := tokenKubeconfig(ts.URL, "token-one") + `- name: other
  context: {cluster: elsewhere, user: them}
`
	switched = strings.Replace(switched, "current-context: dev\n", "", 1) + "current-context: other\n"
	switched = strings.Replace(switched, "users:\n", "users:\n- name: them\n  user: {token: other-token}\n", 1)
	switched = strings.Replace(switched, "clusters:\n", "clusters:\n- name: elsewhere\n  cluster: {server: \"https://192.0.2.1:6443\", insecure-skip-tls-verify: true}\n", 1)
	if err := os.WriteFile(p, []byte(switched), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-one" {
		t.Errorf("current context switched: %v, sent %q", err, srv.last())
	}

	// dev itself now points at another server: its new token is not sent here.
	moved := tokenKubeconfig("https://192.0.2.1:6443", "moved-token")
	if err := os.WriteFile(p, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Discovery().ServerVersion(); err != nil || srv.last() != "token-one" {
		t.Errorf("context moved: %v, sent %q", err, srv.last())
	}
}
