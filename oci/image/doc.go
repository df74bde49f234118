// Package image builds OCI images for Nebula from a single file: a
// WebAssembly module or a statically linked Linux executable. It is the
// library behind `nebula build`.
//
//	cfg := image.NewConfig().WithName("localhost/nebula/hello:v1").WithEnv("NEBULA_MODE", "function")
//	res, err := image.Build(ctx, "hello.wasm", cfg, out)
//	// ctr images import hello.tar
//	// ctr run --rm --runtime io.containerd.nebula.v1 localhost/nebula/hello:v1 hello
//
// The result is an OCI image archive: a tar of an OCI image layout, which
// `ctr images import`, `nerdctl load` and `docker load` accept.
//
//	oci-layout
//	index.json             one descriptor, annotated with the image's names
//	  └ image index        one entry per platform, all for the same manifest
//	      └ manifest       annotated module.wasm.image/variant=compat for wasm
//	          ├ config     entrypoint, args (Cmd), env, labels, os/arch
//	          └ layer      /tmp (1777), the input file, files added
//	manifest.json          docker-save style, pointing at the same blobs
//	blobs/sha256/...
//
// # The name to type after import
//
// [Build] writes the name given to [Config.WithName] into index.json's
// "io.containerd.image.name" annotation (and manifest.json's RepoTags), with
// ":latest" appended when it has no tag, and adds no registry.
// `ctr images import` uses that annotation verbatim (checked with
// containerd 2.4.2), and ctr never normalises what it is given either, so
// the name to type is exactly the stored one, [Result.Name]:
//
//	WithName("nebula/hello")                 stored as nebula/hello:latest
//	WithName("localhost/nebula/hello:v1")    stored as localhost/nebula/hello:v1
//
// Other tools are less literal. nerdctl and Kubernetes (containerd's CRI
// plugin) qualify a short name such as "nebula/hello" with a default
// registry before they look it up, and so never find an image stored under
// the short name. They need a fully-qualified name, whose first component is
// a registry host. For images built for the local machine the recommended
// form is
//
//	localhost/NAME:TAG
//
// as podman names local images: "localhost" counts as a registry host, so
// ctr, nerdctl and Kubernetes all take the name as it is. (Kubernetes pulls
// an image tagged "latest" on every start unless the pod sets
// imagePullPolicy, hence a real tag.) Short names remain valid, and are
// enough when only ctr runs the image.
//
// The image has one gzip-compressed layer: the input file at /NAME (mode
// 0755), a /tmp with mode 1777 and the files given with [Config.WithFile],
// all owned by root. A WebAssembly module is stored under a name ending in
// ".wasm" and listed under "wasi/wasm" and linux/ARCH (the host's
// architecture, or [Config.WithPlatforms]); a native executable must be
// statically linked, and its platform is read from its ELF header. The
// same inputs give the same bytes (see [Config.WithCreated]).
//
// docs/rationale.md gives the reasons for the layout, the platforms, the
// layer and the docker-save manifest.
package image
