package image_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"nebula.dev/nebula/oci/image"
)

// This example packages a WebAssembly module as a function image, the way
// `nebula build hello.wasm -o hello.tar -t localhost/nebula/hello:v1 --function`
// does, and shows the name to use after `ctr images import hello.tar`. The
// localhost/ prefix makes the name fully qualified, so that nerdctl and
// Kubernetes find the image under it too.
func Example() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The smallest valid module: magic and version. Build recognises it by
	// these bytes, whatever the file is called.
	module := filepath.Join(dir, "hello.wasm")
	if err := os.WriteFile(module, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		log.Fatal(err)
	}

	cfg := image.NewConfig().
		WithName("localhost/nebula/hello:v1").
		WithEnv("NEBULA_MODE", "function"). // serve CloudEvents
		WithArgs("--greeting", "hi").
		WithLabel("org.opencontainers.image.title", "hello").
		WithPlatforms("linux/amd64", "linux/arm64")

	out, err := os.Create(filepath.Join(dir, "hello.tar"))
	if err != nil {
		log.Fatal(err)
	}
	defer out.Close()
	res, err := image.Build(context.Background(), module, cfg, out)
	if err != nil {
		log.Fatal(err)
	}

	fmt.Println("kind:      ", res.Kind)
	fmt.Println("name:      ", res.Name)
	fmt.Println("tag:       ", res.Tag)
	fmt.Println("entrypoint:", res.Entrypoint)
	fmt.Println("platforms: ", res.Platforms)
	// Output:
	// kind:       wasm
	// name:       localhost/nebula/hello:v1
	// tag:        v1
	// entrypoint: [/hello.wasm]
	// platforms:  [wasi/wasm linux/amd64 linux/arm64]
}
