package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"nebula.dev/nebula/oci/image"
	"nebula.dev/nebula/wasmhost"
)

// buildOptions are the flags of `nebula build`.
type buildOptions struct {
	output    string
	tag       string
	env       []string
	args      []string
	labels    []string
	adds      []string
	platforms []string
	user      string
	function  bool
}

// newBuildCommand is `nebula build`. Long on purpose: its help text and its
// flags, each a table read top to bottom; RunE only assembles and calls.
func newBuildCommand() *cobra.Command {
	var o buildOptions
	cmd := &cobra.Command{
		Use:   "build FILE -o OUT.tar -t NAME[:TAG]",
		Short: "Package a WebAssembly module or a static executable as an OCI image archive",
		Long: `Build writes an OCI image archive holding FILE as the image's entrypoint.

FILE is recognised by its first bytes, not its name:
  - a WebAssembly core module ("\0asm") becomes /NAME.wasm, and the image is
    listed under the platforms wasi/wasm and linux/ARCH (see --platform); a
    module that exports nebula_handle is a reactor (a Go function built with
    package guest and -buildmode=c-shared): initialised once per task, each
    event in an instance restored from that state; it only serves events, so
    it wants --function;
  - a statically linked ELF executable becomes /NAME, and the image's
    platform is linux/ARCH from the ELF header. A dynamically linked one is
    refused: the image has no libraries.
Either way the image has a /tmp (mode 1777) and nothing else but the files
given with --add.

The archive is an OCI image layout with a docker-save manifest.json, which
'ctr images import', 'nerdctl load' and 'docker load' all accept.

The image is stored under the name given to -t, with :latest appended when
there is no tag, and no registry is added: -t nebula/hello is imported as
nebula/hello:latest, and that is exactly the name 'ctr run' takes. Tools
that qualify short names with a default registry (nerdctl, Kubernetes) do
not find an image stored under a short name; they need a fully-qualified
name. For local images use the form localhost/NAME:TAG, as podman does:
ctr, nerdctl and Kubernetes all take -t localhost/nebula/hello:v1 as it is.
Knative resolves an image's digest through its registry unless the name is
under dev.local (or ko.local, kind.local): name images for Knative Services
dev.local/NAME:TAG.

The output is reproducible: all times are SOURCE_DATE_EPOCH when set, else
the Unix epoch, so the same inputs give the same digest.`,
		Example: `  # A WebAssembly function, served as CloudEvents on $PORT:
  nebula build hello.wasm -o hello.tar -t localhost/nebula/hello:v1 --function
  ctr images import hello.tar
  ctr run --rm --runtime io.containerd.nebula.v1 localhost/nebula/hello:v1 hello

  # A static Go program with a config file and arguments:
  CGO_ENABLED=0 go build -o app .
  nebula build app -o app.tar -t localhost/nebula/app:v1 --add app.yaml:/etc/app/ --arg -config=/etc/app/app.yaml
  ctr images import app.tar
  ctr run --rm localhost/nebula/app:v1 app

  # A short name is stored with :latest added, and is enough for ctr:
  nebula build hello.wasm -o hello.tar -t nebula/hello
  ctr images import hello.tar
  ctr run --rm --runtime io.containerd.nebula.v1 nebula/hello:latest hello`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBuild(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", `write the image archive to this file ("-" for standard output)`)
	f.StringVarP(&o.tag, "tag", "t", "", "image name, NAME[:TAG], stored as given (the tag defaults to latest); prefer localhost/NAME:TAG for local images")
	f.StringArrayVar(&o.env, "env", nil, "set an environment variable in the image, K=V (repeatable)")
	f.StringArrayVar(&o.args, "arg", nil, "append an argument after the entrypoint (repeatable, in order)")
	f.StringArrayVar(&o.labels, "label", nil, "set an image label, K=V (repeatable)")
	f.StringArrayVar(&o.adds, "add", nil, "add the host file SRC at the absolute path DST, SRC:DST; a DST ending in / is a directory (repeatable)")
	f.StringSliceVar(&o.platforms, "platform", nil, "for a WebAssembly module, the linux platforms to list besides wasi/wasm, linux/ARCH[/VARIANT] (repeatable or comma-separated; default linux/"+runtimeArch()+")")
	f.StringVar(&o.user, "user", "", "run the entrypoint as UID[:GID] (numeric); needed for pods with runAsNonRoot")
	f.BoolVar(&o.function, "function", false, "shorthand for --env NEBULA_MODE=function: serve CloudEvents instead of running once")
	_ = cmd.MarkFlagRequired("output")
	_ = cmd.MarkFlagRequired("tag")
	return cmd
}

// config turns the flags into an image.Config, checking what the flags'
// syntax requires. image.Build checks the values themselves.
func (o buildOptions) config() (image.Config, error) {
	cfg := image.NewConfig().WithName(o.tag).WithArgs(o.args...).WithUser(o.user)
	if o.tag == "" {
		return cfg, fmt.Errorf("--tag: an image name is required, NAME[:TAG]")
	}
	if o.function {
		cfg = cfg.WithEnv("NEBULA_MODE", "function")
	}
	for _, kv := range o.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--env %q: want K=V with a non-empty K", kv)
		}
		cfg = cfg.WithEnv(k, v)
	}
	for _, kv := range o.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--label %q: want K=V with a non-empty K", kv)
		}
		cfg = cfg.WithLabel(k, v)
	}
	for _, a := range o.adds {
		// Split at the last ":/", so that SRC may contain colons.
		i := strings.LastIndex(a, ":/")
		if i <= 0 {
			return cfg, fmt.Errorf("--add %q: want SRC:DST with a non-empty SRC and an absolute DST", a)
		}
		cfg = cfg.WithFile(a[:i], a[i+1:])
	}
	if len(o.platforms) > 0 {
		cfg = cfg.WithPlatforms(o.platforms...)
	}
	return cfg, nil
}

func runBuild(ctx context.Context, stdout, stderr io.Writer, file string, o buildOptions) error {
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if o.output == "" {
		return fmt.Errorf("--output: an output file is required")
	}

	var res image.Result
	if o.output == "-" {
		res, err = image.Build(ctx, file, cfg, stdout)
		stdout = stderr // the summary must not corrupt the archive
	} else {
		res, err = buildToFile(ctx, file, cfg, o.output)
	}
	if err != nil {
		return flagError(err)
	}

	fmt.Fprintf(stdout, "wrote %s: %s (%s; %s)\n", o.output, res.Name, res.Kind, strings.Join(res.Platforms, ", "))
	fmt.Fprintf(stdout, "  index digest: %s\n", res.Digest)
	if o.output != "-" {
		fmt.Fprintf(stdout, "  import:       ctr images import %s\n", o.output)
	}
	runtimeFlag := ""
	if res.Kind == image.KindWasm {
		runtimeFlag = "--runtime io.containerd.nebula.v1 "
		if err := noteReactor(stdout, stderr, file, o); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "  run:          ctr run --rm %s%s ID\n", runtimeFlag, res.Name)
	return nil
}

// noteReactor says when the module is a reactor, and warns when the image
// does not run it in function mode: a reactor has no _start to run once.
// The mode can still be set when the task is created (nebula.dev/mode), so
// this is a warning, not an error.
func noteReactor(stdout, stderr io.Writer, file string, o buildOptions) error {
	wasm, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !wasmhost.IsReactor(wasm) {
		return nil
	}
	fmt.Fprintln(stdout, "  reactor:      initialised once per task, every event in an instance restored from that state")
	if !o.function && !slices.Contains(o.env, "NEBULA_MODE=function") {
		fmt.Fprintf(stderr, "warning: %s is a reactor (it exports %s): it only serves events; build it with --function or create the task with nebula.dev/mode=function\n",
			file, wasmhost.HandleExport)
	}
	return nil
}

// flagNames maps image.Config methods to the flags that call them.
var flagNames = map[string]string{
	"WithName":      "--tag",
	"WithEnv":       "--env",
	"WithLabel":     "--label",
	"WithFile":      "--add",
	"WithPlatforms": "--platform",
	"WithUser":      "--user",
}

// flagError rewords an image.ConfigError in terms of the flag that set the
// value.
func flagError(err error) error {
	var ce *image.ConfigError
	if errors.As(err, &ce) {
		if flag, ok := flagNames[ce.Method]; ok {
			return fmt.Errorf("%s %q: %w", flag, ce.Value, ce.Err)
		}
	}
	return err
}

// buildToFile writes the archive next to path and renames it into place, so
// a failed build never leaves a truncated archive behind.
func buildToFile(ctx context.Context, file string, cfg image.Config, path string) (image.Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return image.Result{}, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	res, err := image.Build(ctx, file, cfg, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return res, err
}

func runtimeArch() string { return runtime.GOARCH }
