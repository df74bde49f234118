package hostcmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nebula.dev/nebula/internal/hostargs"
	"nebula.dev/nebula/test/functions"
	"nebula.dev/nebula/wasmhost"
)

// TestCompile: `nebula-host compile` reads the module on stdin, fills the
// cache or only validates, and reports each outcome with its own exit code.
func TestCompile(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(fn(t, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	cache := filepath.Join(t.TempDir(), "cache")
	for _, tc := range []struct {
		name   string
		args   []string
		wasm   []byte
		code   int
		stderr string
		hit    bool
	}{
		{name: "miss", args: []string{"--cache", cache}, wasm: read(functions.Hello)},
		{name: "hit", args: []string{"--cache", cache}, wasm: read(functions.Hello), hit: true},
		{name: "validate only", wasm: read(functions.Hello)},
		{name: "invalid", args: []string{"--cache", cache}, wasm: read(functions.BadImport), code: hostargs.ExitCompileInvalid, stderr: "unsupported import: env.nope"},
		{name: "over a limit", wasm: functions.NestedBlocks(wasmhost.MaxNesting+1, 1), code: hostargs.ExitCompileInvalid, stderr: "(MaxNesting)"},
		{name: "memory minimum", args: []string{"--memory-limit", "64Ki"}, wasm: read(functions.Probe), code: hostargs.ExitCompileInvalid, stderr: "memory minimum above the limit"},
		{name: "unusable cache", args: []string{"--cache", filepath.Join(file, "c")}, wasm: read(functions.Hello), code: hostargs.ExitCompileCache, stderr: "module cache unusable"},
		{name: "memory bound", args: []string{"--max-memory", "64Mi"}, wasm: functions.BigFunction(wasmhost.MaxFunctionBodySize), code: hostargs.ExitCompileMemory,
			stderr: "compiling needed more than the compile-memory limit of 67108864 bytes"},
		{name: "bad flag", args: []string{"--max-memory", "lots"}, wasm: read(functions.Hello), code: ExitUsage, stderr: `--max-memory "lots"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := host(append([]string{"compile"}, tc.args...)...)
			cmd.Stdin = bytes.NewReader(tc.wasm)
			r := runHost(t, cmd)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tc.code, tc.stderr)
			}
			if tc.code != 0 {
				return
			}
			var res hostargs.CompileResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Hit != tc.hit || res.Seconds <= 0 {
				t.Fatalf("stdout %q (%v); want hit %v and a duration", r.stdout, err, tc.hit)
			}
		})
	}
}
