package bench

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	nbimage "nebula.dev/nebula/oci/image"
)

// image is an image a cell runs, resolved once.
type image struct {
	ref    string
	img    containerd.Image
	module string // a wasm image's module path in its rootfs
}

// functions returns the functions of the study, importing the user's
// module as an image when given one.
func (s *study) functions(ctx context.Context) ([]*Function, error) {
	var fns []*Function
	for _, name := range FunctionNames {
		if !slices.Contains(s.cfg.Functions, name) {
			continue
		}
		if f := builtinFunction(name); f != nil {
			fns = append(fns, f)
			continue
		}
		f, err := s.userFunction(ctx)
		if err != nil {
			return nil, err
		}
		fns = append(fns, f)
	}
	return fns, nil
}

func (s *study) userFunction(ctx context.Context) (*Function, error) {
	f := &Function{Name: "user", EventType: "dev.nebula.bench", ContentType: "application/json", Data: benchData}
	if s.cfg.WasmFile != "" {
		ref, err := s.importModule(ctx, s.cfg.WasmFile)
		if err != nil {
			return nil, err
		}
		f.WasmImage = ref
		f.Description = "module " + s.cfg.WasmFile
		return f, nil
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	img, err := s.client.GetImage(octx, s.cfg.Image)
	if err != nil {
		return nil, imageError(s.cfg.Image, s.cfg.Namespace, err)
	}
	spec, err := img.Spec(octx)
	if err != nil {
		return nil, fmt.Errorf("--image %s: reading its config: %w", s.cfg.Image, err)
	}
	args := append(slices.Clone(spec.Config.Entrypoint), spec.Config.Cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("--image %s: the image has neither entrypoint nor cmd", s.cfg.Image)
	}
	if strings.HasSuffix(args[0], ".wasm") {
		f.WasmImage = s.cfg.Image
	} else {
		f.NativeImage = s.cfg.Image
	}
	f.Description = "image " + s.cfg.Image
	return f, nil
}

func imageError(ref, ns string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("image %s is not in namespace %s: import it first (`nebula build … -o F.tar && ctr -n %s images import F.tar`; `make bench` imports the default ones)", ref, ns, ns)
	}
	return fmt.Errorf("image %s: %w", ref, err)
}

// resolve looks up (and unpacks, if needed) the image of c.
func (s *study) resolve(ctx context.Context, c *Cell) error {
	ref := c.image()
	if _, ok := s.images[ref]; ok {
		return nil
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	img, err := s.client.GetImage(octx, ref)
	if err != nil {
		return imageError(ref, s.cfg.Namespace, err)
	}
	unpacked, err := img.IsUnpacked(octx, "")
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if !unpacked {
		if err := img.Unpack(octx, ""); err != nil {
			return fmt.Errorf("image %s: unpacking: %w", ref, err)
		}
	}
	im := &image{ref: ref, img: img}
	if c.Runtime.Wasm {
		spec, err := img.Spec(octx)
		if err != nil {
			return fmt.Errorf("image %s: reading its config: %w", ref, err)
		}
		args := append(slices.Clone(spec.Config.Entrypoint), spec.Config.Cmd...)
		if len(args) == 0 || !filepath.IsAbs(args[0]) {
			return fmt.Errorf("image %s: the entrypoint must be the module's absolute path, got %q", ref, args)
		}
		im.module = filepath.Clean(args[0])
	}
	s.images[ref] = im
	return nil
}

// importModule packages the user's module as `nebula build` would, under a
// name of the study's own, and imports it; close removes it.
func (s *study) importModule(ctx context.Context, file string) (string, error) {
	ref := "localhost/nebula/bench-user:" + s.prefix
	var archive bytes.Buffer
	if _, err := nbimage.Build(ctx, file, nbimage.NewConfig().WithName(ref), &archive); err != nil {
		return "", fmt.Errorf("--wasm %s: packaging the module: %w", file, err)
	}
	octx, cancel := s.opContext(ctx, callTimeout)
	defer cancel()
	imgs, err := s.client.Import(octx, &archive)
	if err != nil {
		return "", fmt.Errorf("--wasm %s: importing the module's image: %w", file, err)
	}
	s.userImage = ref
	for _, img := range imgs {
		if img.Name == ref {
			return ref, nil
		}
	}
	return "", fmt.Errorf("--wasm %s: the imported archive did not hold %s", file, ref)
}
