package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/config/edit"
	"github.com/kforward/kforward/internal/kube"
)

// A forwards file arrives by `git pull` and is applied live, so what it
// says comes from whoever last changed the repository. It may not make
// kforward run a program, talk to a server or listen beyond loopback unless
// this user approved that choice, once per value, recorded outside the
// repository (direnv's allow is the model):
//
//   - a kubeconfig the file names (its server, its credentials, its exec
//     plugin), by path and the sha256 of its content: an edit to it needs
//     approval again. The user's own kubeconfig ($KUBECONFIG,
//     ~/.kube/config) is trusted as kubectl trusts it, whoever names it.
//   - an address beyond loopback.
//
// An approval is keyed by the forwards file's absolute path and the values
// approved, so an edit that changes neither needs nothing new.

// Approval is what a forwards file asks this user to approve: the values
// in it that need approval.
type Approval struct {
	File       string              `json:"-"`                    // the forwards file, absolute
	Kubeconfig *Kubeconfig         `json:"kubeconfig,omitempty"` // nil: the user's own
	Addresses  []string            `json:"addresses,omitempty"`  // beyond loopback, sorted
	Forwards   map[string][]string `json:"-"`                    // by address: the forwards that listen on it
	Execs      []string            `json:"-"`                    // what the kubeconfig's exec plugins run
}

// Kubeconfig is a kubeconfig file as approved: its path and content.
type Kubeconfig struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

func (k Kubeconfig) String() string {
	return fmt.Sprintf("kubeconfig %s (sha256 %s)", k.Path, k.SHA256)
}

// Empty reports whether nothing needs approval.
func (a Approval) Empty() bool { return a.Kubeconfig == nil && len(a.Addresses) == 0 }

// approvals is the file of approvals, as stored.
type approvals struct {
	// TrustedDirs are directories whose forwards files this user trusts
	// as their own, whatever they say (direnv's whitelist.prefix): for
	// files no one else writes. Written by hand; allow never adds one.
	TrustedDirs []string             `json:"trustedDirs,omitempty"`
	Files       map[string]*approved `json:"files"` // by forwards file, absolute
}

type approved struct {
	Kubeconfigs []Kubeconfig `json:"kubeconfigs,omitempty"`
	Addresses   []string     `json:"addresses,omitempty"`
}

// ApprovalsFile is where approvals are recorded: kforward/allowed.json in
// the user's config directory ($XDG_CONFIG_HOME or ~/.config on Linux,
// ~/Library/Application Support on macOS, %AppData% on Windows).
func ApprovalsFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory to record approvals in: %w", err)
	}
	return filepath.Join(dir, "kforward", "allowed.json"), nil
}

// readApprovals reads the approvals file; none yet is no approvals.
func readApprovals(path string) (*approvals, error) {
	a := &approvals{Files: map[string]*approved{}}
	data, err := config.ReadFile(path) // with its size limit
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read approvals: %w", err)
	}
	if err := json.Unmarshal(data, a); err != nil {
		return nil, fmt.Errorf("approvals file %s is not valid JSON: %w", path, err)
	}
	if a.Files == nil {
		a.Files = map[string]*approved{}
	}
	return a, nil
}

// Asks returns what the forwards file at file, as cfg says, needs this
// user's approval for. It reads the kubeconfig the file names, if that is
// not the user's own.
func Asks(file string, cfg *config.Config) (Approval, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return Approval{}, err
	}
	ask := Approval{File: abs, Forwards: map[string][]string{}}
	if k := cfg.Kubeconfig; k != "" && !ownKubeconfig(k) {
		path, err := filepath.Abs(k)
		if err != nil {
			return Approval{}, err
		}
		data, err := kube.ReadKubeconfig(path)
		if err != nil {
			return Approval{}, err
		}
		ask.Kubeconfig = &Kubeconfig{Path: path, SHA256: sum(data)}
		ask.Execs = kube.ExecCommands(path, data)
	}
	for _, f := range cfg.Forwards {
		for _, a := range beyondLoopback(f.Addresses) {
			ask.Addresses = append(ask.Addresses, a)
			ask.Forwards[a] = append(ask.Forwards[a], f.Name)
		}
	}
	slices.Sort(ask.Addresses)
	ask.Addresses = slices.Compact(ask.Addresses)
	return ask, nil
}

// Allow records ask as approved by this user, beside what was approved
// before, in one atomic write.
func Allow(ask Approval) (path string, err error) {
	path, err = ApprovalsFile()
	if err != nil {
		return "", err
	}
	all, err := readApprovals(path)
	if err != nil {
		return "", err
	}
	a := all.Files[ask.File]
	if a == nil {
		a = &approved{}
		all.Files[ask.File] = a
	}
	if k := ask.Kubeconfig; k != nil && !slices.Contains(a.Kubeconfigs, *k) {
		a.Kubeconfigs = append(a.Kubeconfigs, *k)
	}
	for _, addr := range ask.Addresses {
		if !slices.Contains(a.Addresses, addr) {
			a.Addresses = append(a.Addresses, addr)
		}
	}
	slices.Sort(a.Addresses)
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, edit.WriteFile(path, append(data, '\n'))
}

// ownKubeconfig reports whether path is one of the user's own kubeconfig
// files.
func ownKubeconfig(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for _, own := range kube.OwnFiles() {
		if o, err := filepath.Abs(own); err == nil && o == abs {
			return true
		}
	}
	return false
}

// beyondLoopback returns the addresses that are not loopback ones.
func beyondLoopback(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err != nil || !ip.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// errNeedsApproval is the cause of a forward that waits for approval.
var errNeedsApproval = errors.New("needs your approval")

// approvalError says what a forward waits to be approved for, and what to
// run; the same for every forward that waits for the same value, so that
// it is logged once.
func approvalError(file, what string) error {
	return fmt.Errorf("%w: the forwards file %s; run: kforward allow -f %s", errNeedsApproval, what, file)
}

// trust checks what a runner's file asks for against the approvals
// recorded, read again whenever the approvals file changes.
type trust struct {
	file string // the forwards file, absolute

	mu      sync.Mutex
	store   string // the approvals file; "" when there is none to read
	stamp   string // of the approvals file when read
	have    *approved
	trusted bool  // the file is in one of the trusted directories
	err     error // reading it
}

func newTrust(file string) *trust {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	t := &trust{file: abs}
	t.store, t.err = ApprovalsFile()
	return t
}

// approved returns what this user approved for the file, as recorded now.
func (t *trust) approved() (*approved, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.store == "" {
		return &approved{}, t.err
	}
	if now := fileStamp(t.store); now != t.stamp || t.have == nil {
		all, err := readApprovals(t.store)
		t.stamp, t.err, t.have, t.trusted = now, err, &approved{}, false
		if err == nil && all.Files[t.file] != nil {
			t.have = all.Files[t.file]
		}
		if err == nil {
			t.trusted = slices.ContainsFunc(all.TrustedDirs, func(dir string) bool { return within(t.file, dir) })
		}
	}
	return t.have, t.err
}

// own reports whether the kubeconfig at path is trusted as the user's
// own: it is one of theirs, or the forwards file is in a trusted
// directory. Then it needs no approval and is followed as the user's own
// (an inline token read again, not a change that needs approval).
func (t *trust) own(path string) bool {
	if path == "" || ownKubeconfig(path) {
		return true
	}
	t.approved()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.trusted
}

// within reports whether file is under dir.
func within(file, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), file)
	return err == nil && filepath.IsAbs(dir) && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// checkAddresses says whether spec may listen where it asks to.
func (t *trust) checkAddresses(spec config.Forward) error {
	wide := beyondLoopback(spec.Addresses)
	if len(wide) == 0 {
		return nil
	}
	have, err := t.approved()
	if err != nil {
		return err
	}
	t.mu.Lock()
	trusted := t.trusted
	t.mu.Unlock()
	if trusted {
		return nil
	}
	for _, a := range wide {
		if !slices.Contains(have.Addresses, a) {
			return approvalError(t.file, "listens on "+a+", beyond loopback (reachable from other machines)")
		}
	}
	return nil
}

// readKubeconfig reads the kubeconfig the file names, if it is not the
// user's own, and returns it if this user approved that content: data is
// what a client must be built from. own is true for the user's own.
func (t *trust) readKubeconfig(path string) (data []byte, own bool, err error) {
	if t.own(path) {
		return nil, true, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, false, err
	}
	data, err = kube.ReadKubeconfig(abs)
	if err != nil {
		return nil, false, err
	}
	have, err := t.approved()
	if err != nil {
		return nil, false, err
	}
	k := Kubeconfig{Path: abs, SHA256: sum(data)}
	if !slices.Contains(have.Kubeconfigs, k) {
		what := "names " + k.String() + ", which chooses the server and the credentials (and may run a program)"
		if slices.ContainsFunc(have.Kubeconfigs, func(a Kubeconfig) bool { return a.Path == abs }) {
			what = "names " + k.String() + ", changed since you approved it"
		}
		return nil, false, approvalError(t.file, what)
	}
	return data, false, nil
}

// check says whether spec may start: its addresses and its kubeconfig are
// approved, or need no approval.
func (t *trust) check(spec config.Forward) error {
	if err := t.checkAddresses(spec); err != nil {
		return err
	}
	_, _, err := t.readKubeconfig(spec.Kubeconfig)
	return err
}

// fileStamp identifies a file's content by size and modification time.
func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "-"
	}
	return fmt.Sprintf("%d:%d", st.Size(), st.ModTime().UnixNano())
}

// Describe says what an approval accepts, one line per value, for a person.
func (a Approval) Describe() string {
	var b strings.Builder
	if k := a.Kubeconfig; k != nil {
		fmt.Fprintf(&b, "  %s: its server and credentials are used", k)
		if len(a.Execs) > 0 {
			fmt.Fprintf(&b, ", and its exec plugins run: %s", strings.Join(a.Execs, ", "))
		}
		b.WriteString("\n")
	}
	for _, addr := range a.Addresses {
		fmt.Fprintf(&b, "  address %s: reachable from other machines (forwards: %s)\n", addr, strings.Join(a.Forwards[addr], ", "))
	}
	return b.String()
}

// NeedsApproval lists, without reading anything, the values of cfg that
// kforward run uses only once this user approved them, for kforward
// validate.
func NeedsApproval(cfg *config.Config) []string {
	var out []string
	if k := cfg.Kubeconfig; k != "" && !ownKubeconfig(k) {
		out = append(out, "kubeconfig "+k)
	}
	seen := map[string]bool{}
	for _, f := range cfg.Forwards {
		for _, a := range beyondLoopback(f.Addresses) {
			if !seen[a] {
				seen[a] = true
				out = append(out, "address "+a)
			}
		}
	}
	return out
}

// KubeconfigApproved reports whether kforward may use the kubeconfig at
// path for the forwards file at file: it is the user's own, or this user
// approved its content for that file. For shell completion, which would
// otherwise run an unapproved kubeconfig's exec plugin at a TAB.
func KubeconfigApproved(file, path string) bool {
	_, _, err := newTrust(file).readKubeconfig(path)
	return err == nil
}
