package oci

import (
	"errors"
	"io/fs"
	"slices"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestRewriteExec(t *testing.T) {
	wasmTask := []string{HostBinary, "--cache", HostCache, "--mode", "function", "--runtime", "wasm",
		"--memory-limit", "99090432", "--heap-limit", "136314880", "--concurrency", "4", "--", "/fn.wasm"}
	runTask := []string{HostBinary, "--mode", "run", "--runtime", "wasm", "--memory-limit", "528482304", "--", "/fn.wasm", "a"}
	processTask := []string{HostBinary, "--mode", "function", "--runtime", "process", "--", "/fn"}
	nativeTask := []string{"/bin/server"}
	// The container's files: what the shim's openat2(RESOLVE_IN_ROOT)
	// reader would answer.
	files := map[string][]byte{
		"/bin/tool":    {0x7f, 'E', 'L', 'F'},
		"/mod":         []byte("\x00asm\x01\x00\x00\x00"),
		"/w/rel":       []byte("\x00asm\x01\x00\x00\x00"),
		"/fn.wasm":     []byte("\x00asm\x01\x00\x00\x00"),
		"/script.wasm": []byte("#!/bin/sh\n"),
	}
	read := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, fs.ErrNotExist
	}
	module := func(args ...string) []string {
		return append([]string{HostBinary, "--cache", HostCache, "--mode", "run", "--runtime", "wasm", "--memory-limit", "99090432", "--"}, args...)
	}
	for _, tc := range []struct {
		name string
		task []string
		args []string
		cwd  string
		want []string // nil: unchanged
	}{
		{name: "the task's module", task: wasmTask, args: []string{"/fn.wasm", "x"}, want: module("/fn.wasm", "x")},
		{name: "magic without .wasm", task: wasmTask, args: []string{"/mod"}, want: module("/mod")},
		{name: "relative to cwd", task: wasmTask, args: []string{"./rel"}, cwd: "/w", want: module("./rel")},
		{name: "bare .wasm name", task: wasmTask, args: []string{"fn.wasm"}, want: module("fn.wasm")},
		{name: "missing .wasm", task: wasmTask, args: []string{"/nope.wasm"}, want: module("/nope.wasm")},
		{name: "non-module .wasm", task: wasmTask, args: []string{"/script.wasm"}, want: module("/script.wasm")},
		{name: "native binary", task: wasmTask, args: []string{"/bin/tool", "-v"}},
		{name: "bare name is PATH's", task: wasmTask, args: []string{"mod"}},
		{name: "missing file", task: wasmTask, args: []string{"/nope"}},
		{name: "outside the root", task: wasmTask, args: []string{"/../../mod/../etc/passwd"}},
		{name: "run-mode task", task: runTask, args: []string{"/mod"},
			want: []string{HostBinary, "--mode", "run", "--runtime", "wasm", "--memory-limit", "528482304", "--", "/mod"}},
		{name: "process function task", task: processTask, args: []string{"/fn.wasm"}},
		{name: "native task", task: nativeTask, args: []string{"/fn.wasm"}},
		{name: "no task args", args: []string{"/fn.wasm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &specs.Process{Args: slices.Clone(tc.args), Cwd: tc.cwd, Env: []string{"A=1"}, Terminal: true}
			changed, err := RewriteExec(p, tc.task, read)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == nil {
				want = tc.args
			}
			if changed != (tc.want != nil) || !slices.Equal(p.Args, want) {
				t.Errorf("changed %v, args %q\nwant %v, %q", changed, p.Args, tc.want != nil, want)
			}
			if p.Cwd != tc.cwd || !slices.Equal(p.Env, []string{"A=1"}) || !p.Terminal {
				t.Errorf("cwd, env or terminal changed: %+v", p)
			}
		})
	}

	// The path read is the one the container would open: cleaned, joined
	// to the cwd.
	var asked []string
	RewriteExec(&specs.Process{Args: []string{"../x/./tool"}, Cwd: "/w/v"}, wasmTask, func(p string) ([]byte, error) {
		asked = append(asked, p)
		return nil, errors.New("no")
	})
	if !slices.Equal(asked, []string{"/w/x/tool"}) {
		t.Errorf("read %q, want [/w/x/tool]", asked)
	}

	// Task args the shim did not write are an error, not a guess.
	if _, err := RewriteExec(&specs.Process{Args: []string{"/mod"}}, []string{HostBinary, "--mode", "sideways", "--", "/fn.wasm"}, read); err == nil {
		t.Error("want an error for malformed task args")
	}
}
