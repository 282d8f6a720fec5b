package kube

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport"
)

// followToken makes cfg read its bearer token from the kubeconfig again
// whenever one of the kubeconfig's files changes, and after the API server
// answers 401: a token rotated on disk is used from the next request on (a
// new tunnel, a watch's relist), without restarting kforward. client-go
// reads a kubeconfig once; it re-reads only a tokenFile (every minute) and
// runs exec plugins again when their credential expires, so only an inline
// token needs this.
//
// The token is read for the same context and kept only for the same
// server: a kubeconfig whose current context changed, or whose context
// now points elsewhere, never sends this server another server's token.
func followToken(cfg *rest.Config, rules *clientcmd.ClientConfigLoadingRules, kubeContext string) {
	if cfg.BearerToken == "" || cfg.BearerTokenFile != "" || cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return
	}
	files, host := configFiles(rules), cfg.Host
	src := &kubeconfigToken{
		files: files,
		stamp: stamp(files),
		token: cfg.BearerToken,
		load: func() (string, error) {
			// A new ClientConfig each time: a deferred one loads its
			// files once and keeps them.
			if err := checkFiles(rules); err != nil {
				return "", err
			}
			overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
			c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
			if err != nil {
				return "", err
			}
			if c.Host != host {
				return "", fmt.Errorf("context %s now points at %s, not %s", kubeContext, c.Host, host)
			}
			return c.BearerToken, nil
		},
	}
	cfg.BearerToken = ""
	cfg.Wrap(transport.ResettableTokenSourceWrapTransport(src))
}

// kubeconfigToken is an oauth2.TokenSource over the token of a
// kubeconfig's context. It is a transport.ResettableTokenSource, so a 401
// makes the next request read the files again even if they look unchanged.
type kubeconfigToken struct {
	files []string
	load  func() (string, error)

	mu    sync.Mutex
	stamp string // the files' sizes and times when token was read
	token string
}

var _ transport.ResettableTokenSource = (*kubeconfigToken)(nil)

func (s *kubeconfigToken) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := stamp(s.files); now != s.stamp {
		// A file caught half-written, or one that no longer has a token,
		// keeps the token we have: the request then fails as it would
		// have, and the next one looks again.
		if tok, err := s.load(); err == nil && tok != "" {
			s.token, s.stamp = tok, now
		}
	}
	return &oauth2.Token{AccessToken: s.token, TokenType: "Bearer"}, nil
}

func (s *kubeconfigToken) ResetTokenOlderThan(time.Time) {
	s.mu.Lock()
	s.stamp = ""
	s.mu.Unlock()
}

// stamp identifies the contents of files by size and modification time:
// cheap enough for every request, which are few (a dial, a watch).
func stamp(files []string) string {
	var s string
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		} else {
			s += f + ":-;"
		}
	}
	return s
}
