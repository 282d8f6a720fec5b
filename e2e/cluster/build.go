package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Pinned versions of everything the local control plane runs.
const (
	KubernetesVersion = "v1.36.3"
	EtcdVersion       = "v3.6.16"
	KwokVersion       = "v0.8.0"
)

// Binaries are the paths of the built control plane programs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kwok string
	// KwokDir is the kwok module in the module cache, for its stage
	// documents and CRDs.
	KwokDir string
}

// CacheDir is where binaries are built and kept, keyed by version:
// $KFORWARD_E2E_CACHE, else ~/.cache/kforward-e2e/<versions>.
func CacheDir() (string, error) {
	if dir := os.Getenv("KFORWARD_E2E_CACHE"); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "kforward-e2e",
		fmt.Sprintf("k8s-%s_etcd-%s_kwok-%s", KubernetesVersion, EtcdVersion, KwokVersion)), nil
}

// EnsureBinaries builds any missing binary into the cache directory and
// returns them all. The first build takes minutes (kube-apiserver alone
// 5-7 on two cores); progress goes to progress. Concurrent callers, such as
// test packages run in parallel, wait for one build through a file lock.
func EnsureBinaries(ctx context.Context, progress io.Writer) (Binaries, error) {
	dir, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	bin := filepath.Join(dir, "bin")
	b := Binaries{
		Etcd:              filepath.Join(bin, "etcd"),
		APIServer:         filepath.Join(bin, "kube-apiserver"),
		ControllerManager: filepath.Join(bin, "kube-controller-manager"),
		Scheduler:         filepath.Join(bin, "kube-scheduler"),
		Kwok:              filepath.Join(bin, "kwok"),
	}
	b.KwokDir, err = moduleDir(ctx, "sigs.k8s.io/kwok@"+KwokVersion)
	if err != nil {
		return Binaries{}, err
	}
	if b.missing() == nil {
		return b, nil
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return Binaries{}, err
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return Binaries{}, err
	}
	defer unlock()

	k8s := "k8s.io/kubernetes/cmd/"
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	steps := []struct {
		out, what string
		build     func(ctx context.Context, work string) error
	}{
		{b.Etcd, "etcd " + EtcdVersion, func(ctx context.Context, work string) error {
			return buildWrapped(ctx, wrapper{work: work, bin: bin, module: "go.etcd.io/etcd/server/v3", version: EtcdVersion,
				ldflags: "-s -w", pkgs: []string{"go.etcd.io/etcd/server/v3"}, name: "etcd"})
		}},
		{b.APIServer, "kube-apiserver " + KubernetesVersion, func(ctx context.Context, work string) error {
			return buildKubernetes(ctx, work, bin, ldflags, k8s+"kube-apiserver")
		}},
		{b.ControllerManager, "kube-controller-manager " + KubernetesVersion, func(ctx context.Context, work string) error {
			return buildKubernetes(ctx, work, bin, ldflags, k8s+"kube-controller-manager")
		}},
		{b.Scheduler, "kube-scheduler " + KubernetesVersion, func(ctx context.Context, work string) error {
			return buildKubernetes(ctx, work, bin, ldflags, k8s+"kube-scheduler")
		}},
		{b.Kwok, "kwok " + KwokVersion, func(ctx context.Context, work string) error {
			return goCmd(ctx, work, []string{"GOBIN=" + bin}, "install", "-trimpath", "-ldflags=-s -w", "sigs.k8s.io/kwok/cmd/kwok@"+KwokVersion)
		}},
	}
	for _, s := range steps {
		if _, err := os.Stat(s.out); err == nil {
			continue // built meanwhile by another process, or earlier
		}
		work := filepath.Join(dir, "src", filepath.Base(s.out))
		if err := os.MkdirAll(work, 0o755); err != nil {
			return Binaries{}, err
		}
		if err := withProgress(ctx, progress, s.what, func(ctx context.Context) error { return s.build(ctx, work) }); err != nil {
			return Binaries{}, fmt.Errorf("build %s: %w", s.what, err)
		}
	}
	return b, b.missing()
}

func (b Binaries) missing() error {
	for _, p := range []string{b.Etcd, b.APIServer, b.ControllerManager, b.Scheduler, b.Kwok} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

// withProgress runs build, telling progress which binary is being built and,
// every 30 s, how long it has taken so far.
func withProgress(ctx context.Context, progress io.Writer, what string, build func(context.Context) error) error {
	start := time.Now()
	fmt.Fprintf(progress, "kforward-e2e: building %s (first run only; cached afterwards)\n", what)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(progress, "kforward-e2e: still building %s, %s elapsed\n", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	if err := build(ctx); err != nil {
		return err
	}
	fmt.Fprintf(progress, "kforward-e2e: built %s in %s\n", what, time.Since(start).Round(time.Second))
	return nil
}

// buildKubernetes builds commands of k8s.io/kubernetes, whose go.mod
// replaces every staging module with ./staging/...: a wrapper module
// replaces each with its published version instead.
func buildKubernetes(ctx context.Context, work, bin, ldflags string, pkgs ...string) error {
	modFile, err := moduleFile(ctx, "k8s.io/kubernetes@"+KubernetesVersion)
	if err != nil {
		return err
	}
	staging, err := stagingModules(modFile)
	if err != nil {
		return err
	}
	stagingVersion := "v0" + strings.TrimPrefix(KubernetesVersion, "v1")
	replaces := map[string]string{}
	for _, m := range staging {
		replaces[m] = stagingVersion
	}
	return buildWrapped(ctx, wrapper{work: work, bin: bin, module: "k8s.io/kubernetes", version: KubernetesVersion,
		replaces: replaces, ldflags: ldflags, pkgs: pkgs})
}

// wrapper describes a build of main packages from module@version.
type wrapper struct {
	work, bin       string // wrapper module directory, output directory
	module, version string
	replaces        map[string]string // module => version
	ldflags         string
	pkgs            []string
	name            string // binary name when pkgs is one package not named after it
}

// buildWrapped builds through a generated wrapper module (go install
// pkg@version refuses modules with replace directives).
func buildWrapped(ctx context.Context, w wrapper) error {
	var mod strings.Builder
	fmt.Fprintf(&mod, "module kforward.local/e2e-build\n\ngo 1.26.0\n\nrequire %s %s\n", w.module, w.version)
	if len(w.replaces) > 0 {
		mod.WriteString("\nreplace (\n")
		for m, v := range w.replaces {
			fmt.Fprintf(&mod, "\t%s => %s %s\n", m, m, v)
		}
		mod.WriteString(")\n")
	}
	if err := os.WriteFile(filepath.Join(w.work, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return err
	}
	get := []string{"get"}
	for _, p := range w.pkgs {
		get = append(get, p+"@"+w.version)
	}
	if err := goCmd(ctx, w.work, nil, get...); err != nil {
		return err
	}
	// Build into a temporary directory first so a killed build leaves no
	// half-written binary that a later run would trust.
	tmp, err := os.MkdirTemp(w.bin, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := tmp + string(filepath.Separator)
	if w.name != "" {
		out = filepath.Join(tmp, w.name)
	}
	args := append([]string{"build", "-trimpath", "-ldflags=" + w.ldflags, "-o", out}, w.pkgs...)
	if err := goCmd(ctx, w.work, nil, args...); err != nil {
		return err
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(w.bin, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func stagingModules(goMod string) ([]string, error) {
	f, err := os.Open(goMod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "./staging/") {
			mods = append(mods, fields[0])
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("no staging replaces in %s", goMod)
	}
	return mods, s.Err()
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, goBinary(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func goBinary() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		return p
	}
	return "go"
}

// moduleDir downloads a module into the module cache and returns its directory.
func moduleDir(ctx context.Context, modAtVersion string) (string, error) {
	info, err := download(ctx, modAtVersion)
	return info.Dir, err
}

func moduleFile(ctx context.Context, modAtVersion string) (string, error) {
	info, err := download(ctx, modAtVersion)
	return info.GoMod, err
}

type moduleInfo struct{ Dir, GoMod, Error string }

func download(ctx context.Context, modAtVersion string) (moduleInfo, error) {
	cmd := exec.CommandContext(ctx, goBinary(), "mod", "download", "-json", modAtVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	var info moduleInfo
	if jerr := json.Unmarshal(out, &info); jerr != nil || info.Error != "" || err != nil {
		return info, fmt.Errorf("go mod download %s: %w %s", modAtVersion, errors.Join(err, jerr), info.Error)
	}
	return info, nil
}

// lockFile takes an exclusive lock on path, waiting for another holder.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
