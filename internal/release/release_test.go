package release

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const root = "../.."

// TestGoreleaserCheck runs `goreleaser check` on .goreleaser.yaml, with the
// goreleaser version the Makefile pins, built from the Go module proxy
// into the tools cache when it is not there yet (minutes, once).
func TestGoreleaserCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds goreleaser from the Go module proxy on first use")
	}
	bin := goreleaser(t)
	if out, err := check(bin, filepath.Join(root, ".goreleaser.yaml")); err != nil {
		t.Fatalf("goreleaser check: %v\n%s", err, out)
	}
}

// goreleaser check fails on what it should, so the test above means
// something: a deprecated section (exit status 2) and an unknown key.
func TestGoreleaserCheckRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds goreleaser from the Go module proxy on first use")
	}
	bin := goreleaser(t)
	good, err := os.ReadFile(filepath.Join(root, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string]string{
		"deprecated brews": "brews:\n  - name: kforward\n    repository: {owner: kforward, name: homebrew-tap}\n",
		"unknown key":      "archivez: []\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "goreleaser.yaml")
			if err := os.WriteFile(path, append(slices.Clone(good), extra...), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := check(bin, path); err == nil {
				t.Errorf("goreleaser check passes a config with %s:\n%s", name, out)
			}
		})
	}
}

func check(bin, config string) ([]byte, error) {
	abs, err := filepath.Abs(config)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "check", "--config", abs)
	cmd.Dir = root
	return cmd.CombinedOutput()
}

// goreleaser returns the path of the pinned goreleaser, building it first
// if needed: into a temporary directory beside it, then renamed into
// place, so a build cut short or running twice leaves no half binary.
func goreleaser(t *testing.T) string {
	t.Helper()
	version := pinned(t)
	dir := os.Getenv("KFORWARD_TOOLS_CACHE")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "kforward-tools")
	}
	dir = filepath.Join(dir, "goreleaser-"+version)
	bin := filepath.Join(dir, "goreleaser")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	t.Logf("building goreleaser %s into %s (first run only; minutes)", version, dir)
	cmd := exec.Command("go", "install", "github.com/goreleaser/goreleaser/v2@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install goreleaser %s: %v\n%s", version, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "goreleaser"), bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// pinned is the goreleaser version the Makefile pins, so the test and
// make release-check use the same one.
func pinned(t *testing.T) string {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GORELEASER_VERSION \?= (v\S+)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no GORELEASER_VERSION ?= vX.Y.Z line in the Makefile")
	}
	return string(m[1])
}

// The krew manifest installs the archives goreleaser makes: one platform
// per release target, each the archive by its name, with the binary at its
// root as bin (krew links it as kubectl-forward, from metadata.name).
func TestKrewManifest(t *testing.T) {
	var goreleaser struct {
		ProjectName string `yaml:"project_name"`
		Builds      []struct {
			Binary string   `yaml:"binary"`
			Goos   []string `yaml:"goos"`
			Goarch []string `yaml:"goarch"`
		} `yaml:"builds"`
		Archives []struct {
			NameTemplate string `yaml:"name_template"`
			Wrap         any    `yaml:"wrap_in_directory"`
		} `yaml:"archives"`
		Krews []struct {
			Name string `yaml:"name"`
		} `yaml:"krews"`
	}
	read(t, ".goreleaser.yaml", &goreleaser)
	if len(goreleaser.Builds) != 1 || len(goreleaser.Archives) != 1 || len(goreleaser.Krews) != 1 {
		t.Fatalf("want one build, one archive and one krew in .goreleaser.yaml")
	}
	build, archive := goreleaser.Builds[0], goreleaser.Archives[0]
	if archive.NameTemplate != "{{ .ProjectName }}_{{ .Version }}_{{ .Os }}_{{ .Arch }}" || archive.Wrap != nil {
		t.Fatalf("the archives' names or layout changed (%q, wrap_in_directory %v): update plugins/forward.yaml and this test", archive.NameTemplate, archive.Wrap)
	}

	var manifest struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Version   string `yaml:"version"`
			Platforms []struct {
				Selector struct {
					MatchLabels struct{ OS, Arch string } `yaml:"matchLabels"`
				} `yaml:"selector"`
				URI    string `yaml:"uri"`
				Sha256 string `yaml:"sha256"`
				Bin    string `yaml:"bin"`
				Files  any    `yaml:"files"`
			} `yaml:"platforms"`
		} `yaml:"spec"`
	}
	read(t, "plugins/forward.yaml", &manifest)
	if manifest.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || manifest.Kind != "Plugin" {
		t.Errorf("apiVersion %q, kind %q", manifest.APIVersion, manifest.Kind)
	}
	if manifest.Metadata.Name != "forward" || goreleaser.Krews[0].Name != "forward" {
		t.Errorf("plugin named %q in the manifest, %q in .goreleaser.yaml; want forward (kubectl forward, and the file's name)", manifest.Metadata.Name, goreleaser.Krews[0].Name)
	}
	version := manifest.Spec.Version
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+`).MatchString(version) {
		t.Errorf("version %q is not vX.Y.Z", version)
	}
	want := map[string]bool{}
	for _, goos := range build.Goos {
		for _, goarch := range build.Goarch {
			want[goos+"/"+goarch] = true
		}
	}
	for _, p := range manifest.Spec.Platforms {
		goos, goarch := p.Selector.MatchLabels.OS, p.Selector.MatchLabels.Arch
		if !want[goos+"/"+goarch] {
			t.Errorf("platform %s/%s: not built, or listed twice", goos, goarch)
			continue
		}
		delete(want, goos+"/"+goarch)
		ext, bin := ".tar.gz", build.Binary
		if goos == "windows" {
			ext, bin = ".zip", bin+".exe"
		}
		archiveName := fmt.Sprintf("%s_%s_%s_%s%s", goreleaser.ProjectName, strings.TrimPrefix(version, "v"), goos, goarch, ext)
		if wantURI := "https://github.com/kforward/kforward/releases/download/" + version + "/" + archiveName; p.URI != wantURI {
			t.Errorf("%s/%s: uri %s, want %s", goos, goarch, p.URI, wantURI)
		}
		if p.Bin != bin || p.Files != nil {
			t.Errorf("%s/%s: bin %q and files %v; want bin %q and no files (everything, as archived)", goos, goarch, p.Bin, p.Files, bin)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(p.Sha256) {
			t.Errorf("%s/%s: sha256 %q is not 64 hex digits", goos, goarch, p.Sha256)
		}
	}
	for p := range want {
		t.Errorf("no platform for %s", p)
	}
}

func read(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
