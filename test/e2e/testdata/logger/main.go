// Command logger is a containerd binary:// logging driver for tests: it
// appends the task's stdout and stderr, prefixed "out: " and "err: ", to the
// file named by the URI's query (binary:///path/logger?file=/x.log).
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/containerd/containerd/v2/core/runtime/v2/logging"
)

func main() {
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		if len(os.Args) != 3 || os.Args[1] != "file" {
			return fmt.Errorf("usage: logger file PATH, got %q", os.Args[1:])
		}
		f, err := os.OpenFile(os.Args[2], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		var mu sync.Mutex
		var wg sync.WaitGroup
		copyLines := func(prefix string, r io.Reader) {
			defer wg.Done()
			s := bufio.NewScanner(r)
			for s.Scan() {
				mu.Lock()
				fmt.Fprintf(f, "%s%s\n", prefix, s.Text())
				mu.Unlock()
			}
		}
		wg.Add(2)
		go copyLines("out: ", cfg.Stdout)
		go copyLines("err: ", cfg.Stderr)
		if err := ready(); err != nil {
			return err
		}
		wg.Wait()
		return nil
	})
}
