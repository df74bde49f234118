//go:build reactor

// The reactor build of the probe (go build -tags reactor -buildmode=c-shared):
// the same commands, run by the handler of package guest. A CloudEvent's
// type names the command as in "ce" mode; output goes straight to stdout.

package main

import (
	"bytes"
	"os"

	"nebula.dev/nebula/guest"
)

func init() {
	guest.Handle(func(e *guest.Event) (*guest.Reply, error) {
		stdin, getenv = bytes.NewReader(e.Data), e.Getenv
		environ = func() []string { return append(os.Environ(), e.Environ()...) }
		return nil, run("ce", nil)
	})
}
