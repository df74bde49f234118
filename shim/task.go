package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// maxModuleSize bounds the module the shim reads into memory to compile.
const maxModuleSize = 512 << 20

// prepare classifies a task from its bundle's config.json and, for a wasm
// or function-mode task, compiles the module into the cache and rewrites
// config.json so that runc starts Nebula's host program.
func (s *service) prepare(ctx context.Context, r *taskAPI.CreateTaskRequest) error {
	created := time.Now()
	specPath := filepath.Join(r.Bundle, "config.json")
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("reading the bundle's config.json: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return invalidArgument(fmt.Errorf("the bundle's config.json is not an OCI runtime spec: %w", err))
	}
	knobs, err := oci.ParseKnobs(&spec)
	if err != nil {
		return invalidArgument(err)
	}
	var files *rootfsFiles
	rootPath := ""
	if spec.Root != nil {
		rootPath = spec.Root.Path
	}
	openRootfs := func() (*rootfsFiles, error) {
		if files == nil {
			var err error
			if files, err = newRootfsFiles(r.Rootfs, rootPath, r.Bundle); err != nil {
				return nil, err
			}
		}
		return files, nil
	}
	decision := oci.Classify(&spec, knobs, func(p string) ([]byte, error) {
		f, err := openRootfs()
		if err != nil {
			return nil, err
		}
		return f.header(p)
	})
	logger := log.G(ctx).WithField("id", r.ID)
	logger.WithField("runtime", decision.Runtime).WithField("reason", decision.Reason).Info("nebula: classified task")
	if !oci.NeedsRewrite(decision, knobs) {
		return nil
	}

	if fi, err := os.Stat(s.hostBinary); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("nebula's host program is not installed at %s (install nebula-host next to the shim, or set NEBULA_HOST_BINARY): %v", s.hostBinary, err)
	}
	if err := checkStaticHost(s.hostBinary); err != nil {
		return err
	}
	host := oci.Host{Binary: s.hostBinary, ID: r.ID, CreatedAt: created}
	if decision.Runtime == oci.RuntimeWasm {
		module := oci.EntrypointPath(&spec)
		if module == "" {
			return invalidArgument(fmt.Errorf("wasm entrypoint %q must be a path to the module", firstArg(&spec)))
		}
		f, err := openRootfs()
		if err != nil {
			return fmt.Errorf("module %s: %w", module, err)
		}
		wasm, err := f.readFile(module, maxModuleSize)
		if err != nil {
			return invalidArgument(fmt.Errorf("module %s: %w", module, err))
		}
		sum := sha256.Sum256(wasm)
		dir := filepath.Join(s.cacheRoot, hex.EncodeToString(sum[:]))
		cfg := wasmhost.NewConfig()
		if knobs.MemoryLimit > 0 {
			cfg = cfg.WithMemoryLimit(knobs.MemoryLimit)
		}
		if err := os.MkdirAll(s.cacheRoot, 0o700); err != nil {
			return fmt.Errorf("module cache %s: %w", s.cacheRoot, err)
		}
		hit, took, err := wasmhost.CompileToCache(ctx, wasm, dir, cfg)
		if err != nil {
			return invalidArgument(fmt.Errorf("module %s: %w", module, err))
		}
		if err := shareReadOnly(dir); err != nil {
			return fmt.Errorf("module %s: cache %s: %w", module, dir, err)
		}
		cache := "miss"
		if hit {
			cache = "hit"
		}
		logger.WithField("module", module).WithField("digest", "sha256:"+hex.EncodeToString(sum[:])).
			WithField("cache", cache).WithField("seconds", took.Seconds()).Info("nebula: compiled module")
		host.CacheDir, host.CacheHit, host.CompileTime = dir, hit, took
	}
	if err := oci.Rewrite(&spec, decision, knobs, host); err != nil {
		return invalidArgument(err)
	}
	out, err := json.Marshal(&spec)
	if err != nil {
		return err
	}
	return writeFileAtomic(specPath, out)
}

func firstArg(spec *specs.Spec) string {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return ""
	}
	return spec.Process.Args[0]
}

// shareReadOnly makes a module's cache directory readable by the container's
// user, whoever that is: the directory is bind-mounted read-only, and the
// cache root above it stays private to root.
func shareReadOnly(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
}

func writeFileAtomic(path string, data []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".nebula.tmp"
	if err := os.WriteFile(tmp, data, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
