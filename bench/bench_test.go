package bench

import (
	"bytes"
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, []byte("x"), 0o644)
	wasm := filepath.Join(dir, "m.wasm")
	os.WriteFile(wasm, []byte("\x00asm\x01\x00\x00\x00"), 0o644)
	base := func() Config {
		return Config{Address: "/run/x.sock", Namespace: "default", Out: filepath.Join(dir, "out"), N: 3}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"N=0", func(c *Config) { c.N = 0 }, "-n 0: must be at least 1"},
		{"negative warm-up", func(c *Config) { c.Warmup = -1 }, "--warmup -1"},
		{"unknown function", func(c *Config) { c.Functions = []string{"tiny", "rust"} }, `--functions: unknown "rust" (want one or more of tiny, go, user)`},
		{"unknown cell", func(c *Config) { c.Cells = []string{"docker"} }, `--cells: unknown "docker"`},
		{"user without module", func(c *Config) { c.Functions = []string{"user"} }, `"user" needs --wasm FILE or --image REF`},
		{"module without user", func(c *Config) { c.WasmFile, c.Functions = wasm, []string{"go"} }, `add "user"`},
		{"wasm and image", func(c *Config) { c.WasmFile, c.Image = wasm, "x" }, "at most one"},
		{"not a module", func(c *Config) { c.WasmFile = notDir }, "is not a WebAssembly module"},
		{"missing module", func(c *Config) { c.WasmFile = filepath.Join(dir, "nope.wasm") }, "no such file"},
		{"unwritable out", func(c *Config) { c.Out = filepath.Join(notDir, "out") }, "--out"},
		{"no address", func(c *Config) { c.Address = "" }, "--address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c := base()
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Functions, ",") != "tiny,go" || len(c.Cells) != len(Runtimes) || c.Resamples != DefaultResamples {
		t.Errorf("defaults: %v %v %d", c.Functions, c.Cells, c.Resamples)
	}
	c = base()
	c.WasmFile = wasm
	if err := c.check(); err != nil || strings.Join(c.Functions, ",") != "tiny,go,user" {
		t.Errorf("with --wasm: %v, functions %v", err, c.Functions)
	}
}

func TestRunUnreachable(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Namespace: "default", Out: filepath.Join(dir, "out"), N: 1}

	cfg.Address = filepath.Join(dir, "missing.sock")
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "cannot reach containerd") {
		t.Errorf("missing socket: %v", err)
	}
	cfg.Address = filepath.Join(dir, "file")
	os.WriteFile(cfg.Address, nil, 0o644)
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	// A socket nobody serves.
	cfg.Address = filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Address, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "cannot reach containerd") {
		t.Errorf("dead socket: %v", err)
	}
	if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
		t.Errorf("the output directory was left behind by a failed start: %v", err)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestParseServerTiming(t *testing.T) {
	got, err := parseServerTiming("queue;dur=0.000, start;dur=0.031, exec;dur=0.118, total;dur=0.170")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{"queue": 0, "start": 31e-6, "exec": 118e-6, "total": 170e-6} {
		if !near(got[k], want) {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	for _, bad := range []string{"", "start;dur=1, exec;dur=1, total;dur=1", "queue;dur=x, start;dur=1, exec;dur=1, total;dur=1"} {
		if _, err := parseServerTiming(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestModuleVariant(t *testing.T) {
	// (module (func (export "f") (result i32) i32.const 7))
	mod := []byte{0, 'a', 's', 'm', 1, 0, 0, 0,
		1, 5, 1, 0x60, 0, 1, 0x7f, // type section
		3, 2, 1, 0, // function section
		7, 5, 1, 1, 'f', 0, 0, // export section
		10, 6, 1, 4, 0, 0x41, 7, 0x0b} // code section
	v1, err := moduleVariant(mod)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := moduleVariant(mod)
	if bytes.Equal(v1, v2) || !bytes.HasPrefix(v1, mod) || !bytes.Contains(v1, []byte("nebula-bench-variant")) {
		t.Errorf("variants are not distinct extensions of the module")
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	for _, m := range [][]byte{mod, v1} {
		inst, err := r.InstantiateWithConfig(ctx, m, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatalf("wazero rejects the variant: %v", err)
		}
		res, err := inst.ExportedFunction("f").Call(ctx)
		if err != nil || res[0] != 7 {
			t.Errorf("f() = %v, %v", res, err)
		}
		inst.Close(ctx)
	}
	if _, err := moduleVariant([]byte("\x7fELF....")); err == nil {
		t.Errorf("an ELF file became a variant")
	}
	if got := appendULEB(nil, 624485); !bytes.Equal(got, []byte{0xe5, 0x8e, 0x26}) {
		t.Errorf("ULEB128(624485) = % x", got)
	}
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false, 3, 2, 1)
	for r := range 3 {
		p.step(r, "a/x")
		p.step(r, "b/x")
	}
	p.done()
	out := buf.String()
	if strings.Count(out, "\n") != 3 || !strings.Contains(out, "round 1/3 (warm-up)") || !strings.Contains(out, "round 3/3 (measuring), 4/6 calls done") {
		t.Errorf("progress lines:\n%s", out)
	}
	buf.Reset()
	p = newProgress(&buf, true, 1, 2, 0)
	p.step(0, "a/x")
	p.step(0, "b/x")
	p.done()
	if out := buf.String(); !strings.Contains(out, "\r\x1b[K[") || !strings.HasSuffix(out, "\n") {
		t.Errorf("terminal bar %q", out)
	}
	var nilP *progress
	nilP.step(0, "x") // no writer: no output, no panic
	nilP.done()
}
