package image

import (
	"slices"
	"time"
)

// Config says how [Build] turns a file into an image. The zero value is not
// useful: start from [NewConfig], which names nothing yet, and chain the
// WithXxx methods.
//
// A Config is immutable: every WithXxx method returns a modified copy and
// leaves its receiver untouched, so one base Config can be shared and
// specialised freely, even from several goroutines:
//
//	base := image.NewConfig().WithEnv("NEBULA_MODE", "function")
//	a := base.WithName("nebula/a")
//	b := base.WithName("nebula/b") // a is unaffected
//
// The WithXxx methods never fail. Values are checked by [Build], which
// returns an error naming the bad value, so that a caller sees every problem
// at one place.
type Config struct {
	name      string
	env       []envVar
	args      []string
	labels    map[string]string
	files     []addedFile
	platforms []string
	user      string
	created   *time.Time
}

type envVar struct{ key, value string }

type addedFile struct{ src, dst string }

// NewConfig returns a Config with no name, env, args, labels or extra
// files; the platforms and timestamps take their defaults (see
// [Config.WithPlatforms] and [Config.WithCreated]).
func NewConfig() Config { return Config{} }

// clone returns a deep copy, so that a WithXxx method can modify the result
// without aliasing the receiver's slices or map.
func (c Config) clone() Config {
	c.env = slices.Clone(c.env)
	c.args = slices.Clone(c.args)
	c.files = slices.Clone(c.files)
	c.platforms = slices.Clone(c.platforms)
	if c.labels != nil {
		m := make(map[string]string, len(c.labels))
		for k, v := range c.labels {
			m[k] = v
		}
		c.labels = m
	}
	return c
}

// WithName sets the image reference, NAME[:TAG], for example
// "localhost/nebula/hello:v1", "nebula/hello" or
// "registry.example/team/hello:v1". The tag defaults to "latest". The name
// is required: [Build] fails without one, and fails on a name that is not a
// valid reference or that has a digest.
//
// The name is stored as given, with ":latest" appended when it has no tag:
// "nebula/hello" is written into the archive as "nebula/hello:latest" and
// "localhost/nebula/hello" as "localhost/nebula/hello:latest". No registry
// is added (see [Result.Name]). Precisely, the stored name is the reference's
// familiar form (github.com/distribution/reference's FamiliarString), which
// is the name as given except that a name spelling out the registry Docker
// assumes for short names is stored without that registry (and without its
// "library/" prefix), as Docker prints it.
//
// # Notes
//
//   - `ctr images import` and `ctr run` use the stored name verbatim, so
//     any valid name works with ctr.
//   - nerdctl and Kubernetes (containerd's CRI plugin) qualify a short name
//     such as "nebula/hello" with a default registry before looking it up,
//     so they do not find an image stored under the short name. For them,
//     give a fully-qualified name, one whose first component is a registry
//     host. For images that live only on the local machine,
//     "localhost/NAME:TAG" is the recommended form, as podman uses it:
//     "localhost" is a valid registry host, so every tool takes the name as
//     it is.
//   - Kubernetes pulls an image tagged "latest" on every start unless the
//     pod sets imagePullPolicy, so give a local image another tag.
func (c Config) WithName(ref string) Config {
	c = c.clone()
	c.name = ref
	return c
}

// WithEnv sets the environment variable key to value in the image config
// (the Dockerfile ENV instruction). Setting a key again replaces its value
// but keeps its first position; the order is otherwise the order of the
// calls. The key must be non-empty and must not contain '='.
//
// Nebula reads its knobs from the environment, so this is how a mode is
// baked into an image: WithEnv("NEBULA_MODE", "function").
func (c Config) WithEnv(key, value string) Config {
	c = c.clone()
	for i := range c.env {
		if c.env[i].key == key {
			c.env[i].value = value
			return c
		}
	}
	c.env = append(c.env, envVar{key, value})
	return c
}

// WithArgs appends arguments that follow the entrypoint (the image config's
// Cmd). The entrypoint itself is always the input file, so these are what
// the program sees as os.Args[1:].
//
// # Notes
//
//   - As with any image, they are only defaults. `nerdctl run IMAGE arg...`
//     and `docker run IMAGE arg...` replace them and keep the entrypoint,
//     but `ctr run IMAGE ID arg...` replaces the whole command line,
//     entrypoint included, so with ctr the first argument must be the
//     entrypoint again (for example /hello.wasm).
func (c Config) WithArgs(args ...string) Config {
	c = c.clone()
	c.args = append(c.args, args...)
	return c
}

// WithUser sets the user the image's process runs as (the image config's
// User, the Dockerfile USER instruction), "UID" or "UID:GID" in decimal.
// The default is none: the runtime's default, root.
//
// # Notes
//
//   - Only numeric IDs are accepted: the image has no /etc/passwd to look a
//     name up in, and the kubelet refuses a named user for a container with
//     runAsNonRoot, since it cannot tell whether the name is root.
//   - A pod with runAsNonRoot (Knative's queue-proxy, for example) starts
//     only images whose user is set and not 0.
func (c Config) WithUser(user string) Config {
	c = c.clone()
	c.user = user
	return c
}

// WithLabel sets the image config label key to value (the Dockerfile LABEL
// instruction). Setting a key again replaces its value. The key must be
// non-empty.
func (c Config) WithLabel(key, value string) Config {
	c = c.clone()
	if c.labels == nil {
		c.labels = map[string]string{}
	}
	c.labels[key] = value
	return c
}

// WithFile adds the host file src to the image at dst, an absolute path
// inside the image. A dst that ends in "/" names a directory, and the file
// keeps its base name in it, as with the Dockerfile COPY instruction.
// Missing parent directories are created with mode 0755; the file keeps its
// host permission bits (including setuid, setgid and sticky) but is owned by
// root, and symlinks are followed. Only regular files can be added, and dst
// must not collide with the entrypoint, with /tmp, or with another added
// file.
func (c Config) WithFile(src, dst string) Config {
	c = c.clone()
	c.files = append(c.files, addedFile{src, dst})
	return c
}

// WithPlatforms sets which Linux platforms a WebAssembly image is listed
// under, besides "wasi/wasm". Each platform is "linux/ARCH[/VARIANT]" or
// just "ARCH", for example "linux/arm64" or "amd64". Later calls replace
// earlier ones. The default is the platform nebula itself was built for
// (runtime.GOARCH).
//
// For a native executable the platform comes from the ELF header; if
// platforms are set anyway, [Build] fails unless they name exactly that
// platform.
//
// # Notes
//
//   - Listing an architecture costs nothing: every entry points at the same
//     manifest, because a WebAssembly module runs unchanged on every
//     architecture. The list only decides on which machines containerd's
//     default platform matching (`ctr run` without --platform, the CRI
//     plugin, nerdctl) finds the image.
func (c Config) WithPlatforms(platforms ...string) Config {
	c = c.clone()
	c.platforms = slices.Clone(platforms)
	return c
}

// WithCreated sets the time recorded in the image (the config's created
// field and history) and on every file of the layer. It is rounded down to
// whole seconds and converted to UTC.
//
// By default the time is taken from the SOURCE_DATE_EPOCH environment
// variable when it is set (see https://reproducible-builds.org/docs/source-date-epoch/),
// and is the Unix epoch (1970-01-01T00:00:00Z) otherwise. The time of the
// build and the modification times of the input files are never used, so the
// same inputs give the same image digest.
func (c Config) WithCreated(t time.Time) Config {
	c = c.clone()
	t = time.Unix(t.Unix(), 0).UTC()
	c.created = &t
	return c
}
