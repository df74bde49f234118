package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/oci"
)

// maxModuleSize bounds the module the shim reads into memory to compile.
const maxModuleSize = 512 << 20

// prepare classifies a task from its bundle's config.json and, for a wasm
// or function-mode task, checks that it can start and rewrites config.json
// so that runc starts Nebula's host program. For a wasm module that is not
// in the cache yet it returns the compile to run once runc has created the
// container (see Create); nil otherwise.
func (s *service) prepare(ctx context.Context, r *taskAPI.CreateTaskRequest) (*compileJob, error) {
	created := time.Now()
	specPath := filepath.Join(r.Bundle, "config.json")
	spec, err := readSpec(specPath)
	if err != nil {
		return nil, err
	}
	knobs, err := oci.ParseKnobs(spec)
	if err != nil {
		return nil, invalidArgument(err)
	}
	rootfs := &lazyRootfs{rootfs: r.Rootfs, bundle: r.Bundle}
	if spec.Root != nil {
		rootfs.rootPath = spec.Root.Path
	}
	decision := oci.Classify(spec, knobs, rootfs.header)
	logger := log.G(ctx).WithField("id", r.ID)
	logger.WithField("runtime", decision.Runtime).WithField("reason", decision.Reason).Info("nebula: classified task")
	if !oci.NeedsRewrite(decision, knobs) {
		return nil, nil
	}
	if err := oci.CheckStartable(spec, decision, knobs); err != nil {
		return nil, invalidArgument(err)
	}
	if err := s.checkHostBinary(); err != nil {
		return nil, err
	}
	host := oci.Host{Binary: s.hostBinary, ID: r.ID, CreatedAt: created}
	var job *compileJob
	if decision.Runtime == oci.RuntimeWasm {
		if job, err = s.prepareModule(ctx, spec, knobs, rootfs.open, &host); err != nil {
			return nil, err
		}
	}
	if err := oci.Rewrite(spec, decision, knobs, host); err != nil {
		return nil, invalidArgument(err)
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	return job, writeFileAtomic(specPath, out)
}

// readSpec reads a bundle's config.json.
func readSpec(path string) (*specs.Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the bundle's config.json: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, invalidArgument(fmt.Errorf("the bundle's config.json is not an OCI runtime spec: %w", err))
	}
	return &spec, nil
}

// checkHostBinary makes sure the host program is installed and static.
func (s *service) checkHostBinary() error {
	if fi, err := os.Stat(s.hostBinary); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("nebula's host program is not installed at %s (install nebula-host next to the shim, or set NEBULA_HOST_BINARY): %v", s.hostBinary, err)
	}
	return checkStaticHost(s.hostBinary)
}

// prepareModule reads the task's module and checks what needs no
// compiling (less when its cache entry vouches for it, see
// wasmhost.PreflightCached). With a verified cache entry it fills host and
// returns nil; otherwise it returns the compile Create runs in the task's
// cgroups, with host's cache directory the entry to fill, or none if the
// cache directory cannot be made (the host then compiles at start).
func (s *service) prepareModule(ctx context.Context, spec *specs.Spec, knobs oci.Knobs, openRootfs func() (*rootfsFiles, error), host *oci.Host) (*compileJob, error) {
	logger := log.G(ctx).WithField("id", host.ID)
	module, wasm, err := readModule(spec, openRootfs)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sum := sha256.Sum256(wasm)
	digest := hex.EncodeToString(sum[:])
	dir := filepath.Join(s.cacheRoot, digest)
	var hit bool
	if host.Memory, hit, err = preflightModule(wasm, sum, knobs, dir); err != nil {
		return nil, invalidArgument(fmt.Errorf("module %s: %w", module, err))
	}
	if hit {
		touch(dir)
		took := time.Since(start)
		logger.WithField("module", module).WithField("digest", "sha256:"+digest).
			WithField("cache", "hit").WithField("seconds", took.Seconds()).Info("nebula: compiled module")
		host.CacheDir, host.CacheHit, host.CompileTime = dir, true, took
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		logger.WithError(err).WithField("module", module).Warn("nebula: module cache unusable; the host compiles at start")
		dir = ""
	}
	host.CacheDir = dir
	return newCompileJob(spec, knobs, host.ID, module, wasm, dir), nil
}

// readModule reads the module the spec's entrypoint names from the root
// file system.
func readModule(spec *specs.Spec, openRootfs func() (*rootfsFiles, error)) (module string, wasm []byte, err error) {
	module = oci.EntrypointPath(spec)
	if module == "" {
		return "", nil, invalidArgument(fmt.Errorf("wasm entrypoint %q must be a path to the module", firstArg(spec)))
	}
	f, err := openRootfs()
	if err != nil {
		return "", nil, fmt.Errorf("module %s: %w", module, err)
	}
	wasm, err = f.readFile(module, maxModuleSize)
	if err != nil {
		return "", nil, invalidArgument(fmt.Errorf("module %s: %w", module, err))
	}
	return module, wasm, nil
}

// touch marks a cache entry as just used, for PruneCache's LRU order.
func touch(dir string) {
	now := time.Now()
	os.Chtimes(dir, now, now)
}

func firstArg(spec *specs.Spec) string {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return ""
	}
	return spec.Process.Args[0]
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
