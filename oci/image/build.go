package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"nebula.dev/nebula/oci"
)

const (
	// AnnotationImageName is containerd's annotation for the image name on
	// a descriptor of index.json; `ctr images import` names the imported
	// image after it, verbatim.
	AnnotationImageName = "io.containerd.image.name"

	// AnnotationWasmVariant is crun's (and youki's) annotation that marks a
	// manifest, and the containers made from it, as WebAssembly. Its value
	// is "compat" (always WebAssembly) or "compat-smart" (WebAssembly when
	// the entrypoint ends in .wasm). The shim reads it (oci.Classify).
	AnnotationWasmVariant = oci.AnnotationWasmVariant

	// SourceDateEpochEnv is the environment variable that, when set, gives
	// the default image time in seconds since the Unix epoch.
	SourceDateEpochEnv = "SOURCE_DATE_EPOCH"
)

// Result describes an image written by [Build].
type Result struct {
	// Name is the name written into the archive, and so the name
	// `ctr images import` stores the image under: the name given to
	// [Config.WithName] with ":latest" appended when it has no tag, for
	// example "nebula/hello:latest" or "localhost/nebula/hello:v1". ctr
	// uses names verbatim, so this is exactly the name to give `ctr run`.
	// See [Config.WithName] for the tools that qualify short names.
	Name string
	// Tag is the tag part of Name, for example "latest".
	Tag string

	// Kind says whether the input was a WebAssembly module or a native
	// executable.
	Kind Kind
	// Entrypoint is the image's entrypoint: the input's path in the image.
	Entrypoint []string
	// Platforms lists the platforms of the nested index in order, each as
	// "os/arch[/variant]": "wasi/wasm" first for a WebAssembly module.
	Platforms []string

	// Digest is the digest of the image index that index.json points to.
	// containerd records it as the image's target; `ctr images ls` shows it.
	Digest digest.Digest
	// ManifestDigest is the digest of the single image manifest that every
	// platform of the index points to.
	ManifestDigest digest.Digest
}

// Build reads file, which must be a WebAssembly core module or a statically
// linked Linux ELF executable (recognised by their first bytes, not their
// names), and writes to out an OCI image archive holding one image built
// from it as cfg says.
//
// The archive is a tar of an OCI image layout: oci-layout, index.json and
// blobs/sha256/. index.json has a single descriptor, of an image index,
// annotated with the image's names ("io.containerd.image.name" with
// [Result.Name], "org.opencontainers.image.ref.name" with the tag). That index
// lists the image manifest once per platform. The image has one layer:
//
//	/tmp              directory, mode 1777
//	/NAME             the input file, mode 0755, owned by root
//	...               files added with [Config.WithFile]
//
// and its entrypoint is ["/NAME"]. NAME is the input file's base name; a
// module whose name does not end in ".wasm" gets that suffix, because
// Nebula (like crun) recognises WebAssembly entrypoints by it.
//
// A WebAssembly image is listed under "wasi/wasm" and under linux/ARCH for
// each platform of [Config.WithPlatforms], and its manifest carries the
// annotation module.wasm.image/variant=compat. A native image is listed
// under linux/ARCH, from the executable's ELF header.
//
// The archive also holds a docker-save style manifest.json that points at
// the same blobs, so `docker load` accepts it as well as `ctr images
// import` and `nerdctl load`.
//
// Build fails if file is neither kind, if a native executable is dynamically
// linked (the error names the interpreter it needs), or if a value in cfg is
// invalid (a [*ConfigError] naming the value). It checks all of that before
// it writes anything, so only a failure of out itself (or ctx) can leave a
// partial archive behind.
//
// # Notes
//
//   - The output is deterministic: the same file and cfg give the same bytes,
//     hence the same digests, whenever and wherever they are built with the
//     same version of nebula. All times are fixed (see [Config.WithCreated]),
//     tar entries are sorted and owned by root, and host file times and
//     owners are ignored. A nebula built with another Go release may
//     compress the layer differently, which changes the digests but not the
//     layer's DiffID.
//   - containerd stores the image under [Result.Name], the name as given
//     plus a default tag: "nebula/hello" is imported as
//     "nebula/hello:latest", and that is the name `ctr run` needs. Tools
//     that qualify short names need a fully-qualified name such as
//     "localhost/nebula/hello:v1" (see [Config.WithName]).
//   - The whole input is read into memory.
func Build(ctx context.Context, file string, cfg Config, out io.Writer) (Result, error) {
	p, err := newPlan(file, cfg)
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	img, err := p.image(cfg)
	if err != nil {
		return Result{}, err
	}
	idx, top := p.indexes(img)
	if err := p.writeArchive(ctx, top, img, out); err != nil {
		return Result{}, err
	}
	return p.result(idx, img)
}

// plan is what Build checked and read before it writes anything.
type plan struct {
	named     reference.Named
	env       []string
	created   time.Time
	in        input
	platforms []v1.Platform
	tree      tree
}

// newPlan checks cfg and reads file.
func newPlan(file string, cfg Config) (*plan, error) {
	p := &plan{}
	var err error
	if p.named, err = parseName(cfg.name); err != nil {
		return nil, err
	}
	if p.env, err = envList(cfg.env); err != nil {
		return nil, err
	}
	for k, v := range cfg.labels {
		if k == "" {
			return nil, &ConfigError{"WithLabel", k + "=" + v, errors.New("the key must be non-empty")}
		}
	}
	if err = checkUser(cfg.user); err != nil {
		return nil, err
	}
	if p.created, err = cfg.createdTime(); err != nil {
		return nil, err
	}
	if p.in, err = readInput(file); err != nil {
		return nil, err
	}
	if p.platforms, err = cfg.platformList(p.in); err != nil {
		return nil, err
	}
	if p.tree, err = newTree(p.in, cfg.files); err != nil {
		return nil, err
	}
	return p, nil
}

// image is the image: an OCI manifest and config around the one layer.
func (p *plan) image(cfg Config) (v1.Image, error) {
	layerTar, err := p.tree.tarball(p.created)
	if err != nil {
		return nil, err
	}
	layer, err := newLayer(layerTar)
	if err != nil {
		return nil, err
	}
	cp := configPlatform(p.in, p.platforms)
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Created:      v1.Time{Time: p.created},
		OS:           cp.OS,
		Architecture: cp.Architecture,
		Variant:      cp.Variant,
		Config: v1.Config{
			Entrypoint: []string{p.in.path},
			Cmd:        slices.Clone(cfg.args),
			Env:        p.env,
			Labels:     maps.Clone(cfg.labels),
			User:       cfg.user,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: p.created},
			CreatedBy: "nebula build " + p.in.path[1:],
			Comment:   "nebula build: " + string(p.in.kind),
		},
	})
	if err != nil {
		return nil, err
	}
	if p.in.kind == KindWasm {
		img = mutate.Annotations(img, map[string]string{AnnotationWasmVariant: "compat"}).(v1.Image)
	}
	return img, nil
}

// name is the image's name as stored (see Config.WithName).
func (p *plan) name() string { return reference.FamiliarString(p.named) }

// tag is the image's tag.
func (p *plan) tag() string { return p.named.(reference.Tagged).Tag() }

// indexes returns the nested index, the same manifest once per platform,
// and the top index (index.json): one descriptor, of the nested index,
// carrying the names.
func (p *plan) indexes(img v1.Image) (idx, top v1.ImageIndex) {
	idx = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i := range p.platforms {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p.platforms[i]},
		})
	}
	top = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: idx,
		Descriptor: v1.Descriptor{Annotations: map[string]string{
			AnnotationImageName:       p.name(),
			ocispec.AnnotationRefName: p.tag(),
		}},
	})
	return idx, top
}

// writeArchive writes top as an OCI layout with a docker-save manifest
// for img, in a temporary directory, and then as a tar archive to out.
func (p *plan) writeArchive(ctx context.Context, top v1.ImageIndex, img v1.Image, out io.Writer) error {
	dir, err := os.MkdirTemp("", "nebula-build-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, top)
	if err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := writeDockerManifest(lp, img, p.name()); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return tarDir(dir, out, p.created)
}

// result describes what was written.
func (p *plan) result(idx v1.ImageIndex, img v1.Image) (Result, error) {
	idxDigest, err := idx.Digest()
	if err != nil {
		return Result{}, err
	}
	mfDigest, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	res := Result{
		Name:           p.name(),
		Tag:            p.tag(),
		Kind:           p.in.kind,
		Entrypoint:     []string{p.in.path},
		Digest:         digest.Digest(idxDigest.String()),
		ManifestDigest: digest.Digest(mfDigest.String()),
	}
	for _, pl := range p.platforms {
		res.Platforms = append(res.Platforms, pl.String())
	}
	return res, nil
}

// A ConfigError reports a value of a [Config] that [Build] cannot use.
type ConfigError struct {
	// Method is the Config method the value was given to, such as
	// "WithEnv", "WithLabel", "WithFile", "WithPlatforms" or "WithName".
	Method string
	// Value is the value as given: "KEY=VALUE" for WithEnv and WithLabel,
	// "SRC:DST" for WithFile.
	Value string
	// Err says what is wrong with it.
	Err error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s %q: %v", e.Method, e.Value, e.Err) }

func (e *ConfigError) Unwrap() error { return e.Err }

// parseName checks a NAME[:TAG] reference and adds the tag "latest" when
// there is none. The result is normalised (fully qualified) only so that the
// reference package can check and tag it; Build stores its familiar form,
// [reference.FamiliarString], which is the name as given plus the tag.
func parseName(ref string) (reference.Named, error) {
	if ref == "" {
		return nil, &ConfigError{"WithName", ref, errors.New("an image name, NAME[:TAG], is required")}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, &ConfigError{"WithName", ref, err}
	}
	if _, ok := named.(reference.Digested); ok {
		return nil, &ConfigError{"WithName", ref, errors.New("want NAME[:TAG]: a digest is computed, not chosen")}
	}
	return reference.TagNameOnly(named), nil
}

func envList(vars []envVar) ([]string, error) {
	var env []string
	for _, e := range vars {
		if e.key == "" || strings.Contains(e.key, "=") {
			return nil, &ConfigError{"WithEnv", e.key + "=" + e.value, errors.New("the name must be non-empty and must not contain '='")}
		}
		env = append(env, e.key+"="+e.value)
	}
	return env, nil
}

// createdTime is the explicit time, else SOURCE_DATE_EPOCH, else the epoch.
func (c Config) createdTime() (time.Time, error) {
	if c.created != nil {
		return *c.created, nil
	}
	s, ok := os.LookupEnv(SourceDateEpochEnv)
	if !ok || s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("%s=%q: want a non-negative number of seconds since the Unix epoch", SourceDateEpochEnv, s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// wasiPlatform is the platform wasm-aware tools (docker's wasm support,
// runwasi) look for.
var wasiPlatform = v1.Platform{OS: "wasi", Architecture: "wasm"}

// platformList returns the nested index's platforms, in order.
func (c Config) platformList(in input) ([]v1.Platform, error) {
	var linux []v1.Platform
	for _, s := range c.platforms {
		p, err := parseLinuxPlatform(s)
		if err != nil {
			return nil, err
		}
		if !containsPlatform(linux, p) {
			linux = append(linux, p)
		}
	}
	if in.kind == KindNative {
		for _, p := range linux {
			if p.String() != in.platform.String() {
				return nil, &ConfigError{"WithPlatforms", p.String(), fmt.Errorf("the executable is for %s (from its ELF header); platforms can only be chosen for WebAssembly modules", in.platform.String())}
			}
		}
		return []v1.Platform{in.platform}, nil
	}
	if len(linux) == 0 {
		linux = []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}
	}
	return append([]v1.Platform{wasiPlatform}, linux...), nil
}

func parseLinuxPlatform(s string) (v1.Platform, error) {
	spec := s
	if !strings.Contains(spec, "/") {
		spec = "linux/" + spec
	}
	p, err := v1.ParsePlatform(spec)
	if err != nil {
		return v1.Platform{}, &ConfigError{"WithPlatforms", s, err}
	}
	if p.OS != "linux" || p.Architecture == "" || p.OSVersion != "" || len(p.OSFeatures) > 0 || strings.Count(spec, "/") > 2 {
		return v1.Platform{}, &ConfigError{"WithPlatforms", s, errors.New("want linux/ARCH[/VARIANT] or ARCH")}
	}
	return *p, nil
}

func containsPlatform(ps []v1.Platform, p v1.Platform) bool {
	for _, q := range ps {
		if q.String() == p.String() {
			return true
		}
	}
	return false
}

// configPlatform is the os/architecture written in the image config. For a
// WebAssembly image see docs/rationale.md, "A WebAssembly image lists
// Linux platforms and says linux in its config".
func configPlatform(in input, platforms []v1.Platform) v1.Platform {
	if in.kind == KindNative {
		return in.platform
	}
	return platforms[1] // the first linux platform
}

// writeDockerManifest adds a docker-save style manifest.json to the layout,
// pointing at the layout's own blobs, for `docker load`.
func writeDockerManifest(lp layout.Path, img v1.Image, repoTag string) error {
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	d := tarball.Descriptor{Config: blobPath(cfgName), RepoTags: []string{repoTag}}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		d.Layers = append(d.Layers, blobPath(h))
	}
	b, err := json.Marshal(tarball.Manifest{d})
	if err != nil {
		return err
	}
	return lp.WriteFile("manifest.json", b, 0o644)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// checkUser checks a [Config.WithUser] value: empty, "UID" or "UID:GID",
// each a decimal number below 2^32.
func checkUser(user string) error {
	if user == "" {
		return nil
	}
	uid, gid, hasGID := strings.Cut(user, ":")
	ids := []string{uid}
	if hasGID {
		ids = append(ids, gid)
	}
	for _, id := range ids {
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return &ConfigError{"WithUser", user, errors.New("want UID or UID:GID, decimal numbers below 2^32")}
		}
	}
	return nil
}
