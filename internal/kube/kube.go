// Package kube connects to a cluster from a kubeconfig the way kubectl
// does (client-go's loading rules, exec plugins and all), with errors that
// say what to do: which kubeconfig files were tried, which contexts exist.
// The runner, `kforward init` and shell completion all connect through it.
package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Client is a connection to one context of a kubeconfig.
type Client struct {
	Config    *rest.Config
	Client    kubernetes.Interface
	Namespace string // the context's namespace, else "default"
	Context   string // the context used
}

// Client-side rate limits. client-go's default (5 requests/s, burst 10)
// queues a start of a few dozen forwards for seconds; kubectl raised its
// own to 50 and 300 for the same reason. kforward's requests at start are
// one lookup per forward and one watch per namespace; after that it is
// quiet.
const (
	QPS   = 50
	Burst = 300
)

// Connect loads the kubeconfig (empty: $KUBECONFIG, then ~/.kube/config)
// and returns a client for kubeContext (empty: the current context).
func Connect(kubeconfig, kubeContext string) (*Client, error) {
	rules := loadingRules(kubeconfig)
	if err := checkFiles(rules); err != nil {
		return nil, err
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	return connect(cc, rules, kubeContext, true)
}

// connect builds the client of cc; rules say where cc came from, for
// errors and, if follow, for following an inline token.
func connect(cc clientcmd.ClientConfig, rules *clientcmd.ClientConfigLoadingRules, kubeContext string, follow bool) (*Client, error) {
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, explain(err, rules, kubeContext, nil)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, explain(err, rules, kubeContext, &raw)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, explain(err, rules, kubeContext, &raw)
	}
	cfg.QPS, cfg.Burst = QPS, Burst
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	if follow {
		followToken(cfg, rules, name)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Config: cfg, Client: cs, Namespace: ns, Context: name}, nil
}

// loadingRules are client-go's: the explicit file, else $KUBECONFIG's
// files, else ~/.kube/config, with the home directory as it is now.
func loadingRules(kubeconfig string) *clientcmd.ClientConfigLoadingRules {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	if os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if home, err := os.UserHomeDir(); err == nil {
			rules.Precedence = []string{filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}
		}
	}
	return rules
}

// configFiles are the kubeconfig files the rules read, for followToken.
func configFiles(rules *clientcmd.ClientConfigLoadingRules) []string {
	if rules.ExplicitPath != "" {
		return []string{rules.ExplicitPath}
	}
	return rules.GetLoadingPrecedence()
}

// Contexts returns the names of the kubeconfig's contexts, sorted, and the
// current one; for completion and messages.
func Contexts(kubeconfig string) (names []string, current string, err error) {
	rules := loadingRules(kubeconfig)
	if err := checkFiles(rules); err != nil {
		return nil, "", err
	}
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil, "", explain(err, rules, "", nil)
	}
	return contextNames(&raw), raw.CurrentContext, nil
}

func contextNames(raw *clientcmdapi.Config) []string {
	names := make([]string, 0, len(raw.Contexts))
	for n := range raw.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// explain turns client-go's loading errors into ones that say what was
// tried and what to do.
func explain(err error, rules *clientcmd.ClientConfigLoadingRules, kubeContext string, raw *clientcmdapi.Config) error {
	if rules.ExplicitPath != "" {
		if _, statErr := os.Stat(rules.ExplicitPath); statErr != nil {
			return fmt.Errorf("kubeconfig %s (the forwards file's kubeconfig:) cannot be read: %w", rules.ExplicitPath, unwrapPath(statErr))
		}
	}
	if raw != nil && len(raw.Contexts) > 0 {
		switch {
		case kubeContext != "" && raw.Contexts[kubeContext] == nil:
			return fmt.Errorf("context %q is not in the kubeconfig (%s); it has: %s", kubeContext, files(rules), strings.Join(contextNames(raw), ", "))
		case kubeContext == "" && raw.CurrentContext == "":
			return fmt.Errorf("the kubeconfig (%s) has no current context; name one with context: in the forwards file (it has: %s)", files(rules), strings.Join(contextNames(raw), ", "))
		}
	}
	if clientcmd.IsEmptyConfig(err) || (raw != nil && len(raw.Contexts) == 0 && len(raw.Clusters) == 0) {
		if rules.ExplicitPath != "" {
			return fmt.Errorf("kubeconfig %s (the forwards file's kubeconfig:) has no clusters", rules.ExplicitPath)
		}
		return fmt.Errorf("no kubeconfig: tried %s; set KUBECONFIG, write ~/.kube/config, or name one with kubeconfig: in the forwards file", tried(rules))
	}
	return err
}

// tried says which files the default rules looked at, and why each failed.
func tried(rules *clientcmd.ClientConfigLoadingRules) string {
	var parts []string
	if os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "" {
		for _, p := range rules.Precedence {
			parts = append(parts, "$KUBECONFIG's "+p+" ("+why(p)+")")
		}
	} else {
		parts = append(parts, "$KUBECONFIG (not set)")
		for _, p := range rules.Precedence {
			parts = append(parts, p+" ("+why(p)+")")
		}
	}
	return strings.Join(parts, " and ")
}

func why(path string) string {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case err != nil:
		return unwrapPath(err).Error()
	case st.Size() == 0:
		return "empty"
	}
	return "no clusters in it"
}

// files names the kubeconfig files in use.
func files(rules *clientcmd.ClientConfigLoadingRules) string {
	if rules.ExplicitPath != "" {
		return rules.ExplicitPath
	}
	var have []string
	for _, p := range rules.GetLoadingPrecedence() {
		if _, err := os.Stat(p); err == nil {
			have = append(have, p)
		}
	}
	return strings.Join(have, ", ")
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
