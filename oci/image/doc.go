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
// # Why a nested index
//
// index.json holds a single descriptor pointing at an image index, as
// `ctr images export` writes it: the names go on that one descriptor, and
// the index lists the manifest once per platform. containerd's import walks
// the index, keeps the platforms it is asked for (by default the host's),
// and names the image after the descriptor's annotation.
//
// # Platforms of a WebAssembly image
//
// A module runs on any architecture, so the nested index lists the same
// manifest several times: under "wasi/wasm", the platform wasm-aware tools
// (Docker's wasm support, runwasi shims) select, and under linux/ARCH for
// the host's architecture or those of [Config.WithPlatforms]. Without a
// linux entry, `ctr images import`, `ctr run`, nerdctl and the CRI plugin on
// Linux would find no matching platform and would need --platform flags (the
// CRI has none), so plain `ctr run` would not work.
//
// The image config records os "linux" and the first listed Linux
// architecture, not "wasip1"/"wasm" or "wasi"/"wasm". containerd does not
// mind either way: it picks manifests by the index descriptors' platforms,
// and with containerd 2.4.2 images whose config said linux/amd64, wasi/wasm
// and wasip1/wasm all imported, unpacked and reached runc identically
// (`ctr run --runtime io.containerd.runc.v2` fails at exec with "exec format
// error", as it must for a .wasm file; Nebula's shim is what runs it). The
// difference is elsewhere: `docker load` with Docker's classic image store
// reads only manifest.json and the config, and refuses an image whose os is
// not the host's. And the image is, after all, a Linux container image:
// under Nebula the module runs inside a runc container whose root file
// system is this layer. The cost is that the "wasi/wasm" entry points at a
// config saying linux; wasm-aware tools select by the index entry, and none
// we know of cross-checks the config.
//
// The manifest's annotation module.wasm.image/variant=compat is crun's
// convention for "this image is WebAssembly"; Nebula's own classifier
// (package oci) honours it too, along with the ".wasm" suffix of the
// entrypoint, which is why a module is always stored under a name ending
// in ".wasm".
//
// # The layer
//
// The single layer holds only what the program needs: the input file at
// /NAME (mode 0755, so that on a host where binfmt_misc runs .wasm files,
// and under plain runc, it is an executable like any other; runc reports
// "exec format error" rather than "permission denied"), a /tmp with mode
// 1777 because programs and WASI guests expect a writable temporary
// directory, and the files given with [Config.WithFile]. Everything is owned
// by root. The layer is gzip-compressed (media type
// application/vnd.oci.image.layer.v1.tar+gzip), which every client accepts.
//
// Native executables must be static: the image has no dynamic loader and no
// libraries, and running a dynamically linked program there fails with a
// baffling "no such file or directory" (the missing file is the loader, not
// the program). [Build] refuses such a file, naming the interpreter from its
// PT_INTERP program header. The platform of a native image is read from the
// ELF header, so a cross-compiled executable gets the right one.
//
// # Reproducibility
//
// Building the same inputs twice gives the same bytes: all times are fixed
// (SOURCE_DATE_EPOCH or the Unix epoch, see [Config.WithCreated]), tar
// entries are sorted and owned by root, and nothing from the host (file
// times, owners, user names, the clock) gets in. Equal digests therefore
// mean equal content, and a CI system can check an image by rebuilding it.
//
// # docker load
//
// Besides the OCI layout the archive has a manifest.json in the format of
// `docker save` (go-containerregistry's tarball.Manifest), whose Config and
// Layers name the layout's own blobs, as `docker save` itself does since
// Docker 25. It costs a few hundred bytes and no duplicated blob. Docker's
// classic image store reads only this file; Docker's containerd image store,
// nerdctl and ctr prefer index.json when both are present (containerd's
// archive importer says so). Both carry the same name, [Result.Name].
//
// # Why go-containerregistry
//
// The manifests, configs, indexes and layout are made by
// go-containerregistry (packages empty, mutate, tarball and layout), a
// well-kept library used by ko, crane and many registries' tooling, so no
// JSON or digest is written by hand here. This package only lays out the
// layer's files and tars the finished layout directory.
package image
