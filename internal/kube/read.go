package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// MaxKubeconfigSize is the largest kubeconfig read, in bytes. client-go
// reads a kubeconfig whole with no limit, so `kubeconfig: /dev/zero` grew
// a process by gigabytes a second, in a read that no signal ends. A
// kubeconfig of a thousand clusters, each with its certificates inline, is
// about 10 MB.
const MaxKubeconfigSize = 16 << 20

// checkFile refuses a kubeconfig that is not a regular file (a device or a
// FIFO may never end) or is larger than MaxKubeconfigSize, before anything
// reads it. A file that does not exist passes: client-go says so.
func checkFile(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("kubeconfig %s cannot be read: %w", path, unwrapPath(err))
	case !st.Mode().IsRegular():
		return fmt.Errorf("kubeconfig %s is not a regular file (%s); a kubeconfig must be a file", path, st.Mode().Type())
	case st.Size() > MaxKubeconfigSize:
		return tooBig(path)
	}
	return nil
}

func tooBig(path string) error {
	return fmt.Errorf("kubeconfig %s is larger than 16 MiB (%d bytes), the most kforward reads", path, MaxKubeconfigSize)
}

// checkFiles is checkFile for every file the rules would read.
func checkFiles(rules *clientcmd.ClientConfigLoadingRules) error {
	for _, f := range configFiles(rules) {
		if err := checkFile(f); err != nil {
			return err
		}
	}
	return nil
}

// ReadKubeconfig reads the kubeconfig at path whole, refusing what
// checkFile refuses without reading past the limit (a file may grow while
// it is read).
func ReadKubeconfig(path string) ([]byte, error) {
	return readLimited(path, "kubeconfig")
}

func readLimited(path, what string) ([]byte, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s cannot be read: %w", what, path, unwrapPath(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() { // swapped since checked
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKubeconfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s cannot be read: %w", what, path, unwrapPath(err))
	}
	if len(data) > MaxKubeconfigSize {
		return nil, tooBig(path)
	}
	return data, nil
}

// ConnectData is Connect for a kubeconfig already read from path: the
// client is built from exactly data, whatever the file holds by now (what
// was approved is what is used). Relative paths in it are relative to
// path's directory, as for a kubeconfig read from there. Its inline token
// is not followed: a change to the file is a new kubeconfig.
func ConnectData(path string, data []byte, kubeContext string) (*Client, error) {
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	for _, c := range raw.Clusters {
		c.LocationOfOrigin = path
	}
	for _, a := range raw.AuthInfos {
		a.LocationOfOrigin = path
	}
	for _, c := range raw.Contexts {
		c.LocationOfOrigin = path
	}
	if err := clientcmd.ResolveLocalPaths(raw); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path} // for messages
	cc := clientcmd.NewNonInteractiveClientConfig(*raw, kubeContext, &clientcmd.ConfigOverrides{}, nil)
	return connect(cc, rules, kubeContext, false)
}

// Fingerprint identifies what a client of kubeconfig's context (empty: the
// current one) connects to and as whom, as the kubeconfig says it now: the
// context, its cluster and its user, and the content of the files they
// name (CA, client certificate and key). When a cluster is made again
// (kind, minikube) some of these change. An inline token is left out: a
// client follows it (followToken). files are the files it read, whose
// change may change it.
func Fingerprint(kubeconfig, kubeContext string) (sum string, files []string, err error) {
	rules := loadingRules(kubeconfig)
	if err := checkFiles(rules); err != nil {
		return "", nil, err
	}
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return "", nil, err
	}
	files = configFiles(rules)
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	var what struct {
		Name    string
		Context *clientcmdapi.Context
		Cluster *clientcmdapi.Cluster
		User    *clientcmdapi.AuthInfo
		Files   map[string]string // path: sha256 of its content
	}
	what.Name, what.Files = name, map[string]string{}
	// A context or cluster missing is an error, not a fingerprint: a file
	// read while it is being written (truncated, then written) is empty.
	ctx := raw.Contexts[name]
	if ctx == nil {
		return "", files, fmt.Errorf("context %q is not in the kubeconfig", name)
	}
	c := *ctx
	c.Extensions = nil
	what.Context = &c
	cl := raw.Clusters[c.Cluster]
	if cl == nil {
		return "", files, fmt.Errorf("cluster %q of context %q is not in the kubeconfig", c.Cluster, name)
	}
	cluster := *cl
	cluster.Extensions = nil
	what.Cluster = &cluster
	files = append(files, hashFile(what.Files, cluster.CertificateAuthority)...)
	if u := raw.AuthInfos[c.AuthInfo]; u != nil {
		user := *u
		user.Token, user.Extensions = "", nil
		what.User = &user
		files = append(files, hashFile(what.Files, user.ClientCertificate)...)
		files = append(files, hashFile(what.Files, user.ClientKey)...)
	}
	b, err := json.Marshal(what)
	if err != nil {
		return "", nil, err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), files, nil
}

// hashFile records the sha256 of the file at path (if any) in sums, and
// returns it as a file to watch.
func hashFile(sums map[string]string, path string) []string {
	if path == "" {
		return nil
	}
	if data, err := readLimited(path, "file"); err == nil {
		h := sha256.Sum256(data)
		sums[path] = hex.EncodeToString(h[:])
	} else {
		sums[path] = "unreadable"
	}
	return []string{path}
}

// OwnFiles are the kubeconfig files that are the user's own: $KUBECONFIG's,
// else ~/.kube/config. They are trusted as kubectl trusts them, whoever
// names them.
func OwnFiles() []string {
	return loadingRules("").GetLoadingPrecedence()
}

// ExecCommands lists the exec credential plugins a kubeconfig's users run,
// for a person approving it.
func ExecCommands(path string, data []byte) []string {
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil
	}
	var out []string
	for _, u := range raw.AuthInfos {
		if u.Exec != nil {
			u.LocationOfOrigin = path
			cfg := &clientcmdapi.Config{AuthInfos: map[string]*clientcmdapi.AuthInfo{"u": u}}
			clientcmd.ResolveLocalPaths(cfg)
			out = append(out, u.Exec.Command)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
