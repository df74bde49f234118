package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// T is the part of testing.TB the harness needs, so that `make demo` and
// benchmarks outside `go test` can drive it too.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Cleanup(func())
}

// DefaultContainerdVersion is the daemon version tests use unless
// NEBULA_CONTAINERD_VERSION says otherwise.
const DefaultContainerdVersion = "2.4.2"

// RepoRoot returns the directory holding Nebula's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// ContainerdVersion is the version under test (NEBULA_CONTAINERD_VERSION,
// default DefaultContainerdVersion).
func ContainerdVersion() string {
	if v := os.Getenv("NEBULA_CONTAINERD_VERSION"); v != "" {
		return v
	}
	return DefaultContainerdVersion
}

// DefaultToolsDir is where hack/install-tools.sh builds the pinned tools
// unless NEBULA_TOOLS says otherwise: outside the clone, so that a fresh
// clone on the same machine (CI's) does not build them again.
const DefaultToolsDir = "/var/cache/nebula/tools"

// ToolsDir is where hack/install-tools.sh put the pinned tools.
func ToolsDir() (string, error) {
	if d := os.Getenv("NEBULA_TOOLS"); d != "" {
		return d, nil
	}
	return DefaultToolsDir, nil
}

// Tool returns the path of a pinned containerd tool (containerd, ctr,
// containerd-shim-runc-v2) of the given version, failing t if it is not
// installed.
func Tool(t T, version, name string) string {
	t.Helper()
	dir, err := ToolsDir()
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := filepath.Join(dir, "containerd-"+version, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s %s is not installed (%v): run `make tools`", name, version, err)
	}
	return p
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds Nebula's binaries (the shim, the nebula CLI) once per test
// process and returns the directory holding them. The shim is built static,
// as it is shipped.
func Binaries(t T) string {
	t.Helper()
	buildOnce.Do(func() {
		var root string
		if root, buildErr = RepoRoot(); buildErr != nil {
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "nebula-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("%v", buildErr)
	}
	return binDir
}
