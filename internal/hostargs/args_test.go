package hostargs

import (
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
)

// full sets every field of Args to a value other than its zero.
var full = Args{
	Mode:             ModeFunction,
	Runtime:          abi.RuntimeWasm,
	CacheDir:         "/dev/.nebula/cache",
	Hide:             []string{"/dev/.nebula", "/secret dir"},
	MemoryLimit:      99090432,
	HeapLimit:        136314880,
	StdoutLimit:      7077888,
	BodyBudget:       67108864,
	Timeout:          1500 * time.Millisecond,
	Concurrency:      4,
	MaxBody:          1 << 20,
	MetricsPort:      9100,
	ReplyType:        "com.example.reply",
	ReplySource:      "/fn",
	ReplyContentType: "application/json; charset=utf-8",
	MaxConnections:   100,
	Protocol:         "http",
	ContainerID:      "fn-1",
	CreatedAt:        time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC),
	CompileTime:      1234567891 * time.Nanosecond,
	CacheHit:         true,
	Command:          []string{"/fn.wasm", "--flag", "two words", "--"},
}

// TestArgsRoundTrip: every field of Args survives Argv and Parse. A field
// added to Args but not to full, Argv or Parse fails here.
func TestArgsRoundTrip(t *testing.T) {
	roundTrip(t, full, func(a Args) []string { return a.Argv() }, Parse)
}

// TestCompileRoundTrip: the same for Compile.
func TestCompileRoundTrip(t *testing.T) {
	c := Compile{CacheDir: "/var/lib/nebula/cache/ab", MemoryLimit: 64 << 10, MaxMemory: 2 << 30}
	roundTrip(t, c, func(c Compile) []string {
		argv := c.Argv()
		if argv[0] != CompileSubcommand {
			t.Fatalf("argv %q does not start with %q", argv, CompileSubcommand)
		}
		return argv[1:]
	}, ParseCompile)
}

func roundTrip[T any](t *testing.T, in T, render func(T) []string, parse func([]string) (T, error)) {
	t.Helper()
	v := reflect.ValueOf(in)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("the fixture leaves %s zero: set every field", v.Type().Field(i).Name)
		}
	}
	argv := render(in)
	out, err := parse(argv)
	if err != nil {
		t.Fatalf("parsing %q: %v", argv, err)
	}
	got := reflect.ValueOf(out)
	for i := range v.NumField() {
		if !reflect.DeepEqual(got.Field(i).Interface(), v.Field(i).Interface()) {
			t.Errorf("%s: rendered and parsed as %#v, want %#v (argv %q)", v.Type().Field(i).Name, got.Field(i).Interface(), v.Field(i).Interface(), argv)
		}
	}
}

// TestParseMalformed: command lines the shim never writes are usage errors
// that name the flag and the value.
func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"--nope", "--", "/fn"}, "flag provided but not defined: -nope"},
		{[]string{"--memory-limit", "lots", "--", "/fn"}, `--memory-limit "lots": want bytes with an optional Ki, Mi, Gi or Ti suffix`},
		{[]string{"--stdout-limit", "-1", "--", "/fn"}, `--stdout-limit "-1": want bytes`},
		{[]string{"--heap-limit", "8Ei", "--", "/fn"}, `--heap-limit "8Ei": want bytes`},
		{[]string{"--max-body", "99999999999Ti", "--", "/fn"}, `--max-body "99999999999Ti": size overflows 64 bits`},
		{[]string{"--created-at", "yesterday", "--", "/fn"}, `--created-at "yesterday": want an RFC 3339 time`},
		{[]string{"--timeout", "soon", "--", "/fn"}, `invalid value "soon" for flag -timeout`},
		{[]string{"--mode", "batch", "--", "/fn"}, `--mode "batch": want run or function`},
		{[]string{"--runtime", "runc", "--", "/fn"}, `--runtime "runc": want wasm`},
		{[]string{"--runtime", "process", "--", "/fn"}, `--runtime "process": want wasm (or process in function mode)`},
		{[]string{"--cache", "/c", "--"}, "no module or program to run"},
	} {
		if _, err := Parse(tc.argv); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): %v, want %q", tc.argv, err, tc.want)
		}
	}
	if _, err := Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	if _, err := ParseCompile([]string{"--max-memory", "lots"}); err == nil || !strings.Contains(err.Error(), `--max-memory "lots": want bytes`) {
		t.Errorf("compile --max-memory lots: %v", err)
	}
	if _, err := ParseCompile([]string{"/fn.wasm"}); err == nil || !strings.Contains(err.Error(), "read on stdin") {
		t.Errorf("compile /fn.wasm: %v", err)
	}
}

// TestParseDefaults: what the host reads when the shim sets nothing, and
// the hand-written forms Parse accepts besides Argv's.
func TestParseDefaults(t *testing.T) {
	a, err := Parse([]string{"/fn.wasm", "--not-a-flag"})
	if err != nil || !reflect.DeepEqual(a, Args{Command: []string{"/fn.wasm", "--not-a-flag"}}) {
		t.Errorf("no flags: %+v, %v", a, err)
	}
	a, err = Parse([]string{"--memory-limit", "64Mi", "-hide=/a", "--hide", "/b", "/fn.wasm"})
	if err != nil || a.MemoryLimit != 64<<20 || !reflect.DeepEqual(a.Hide, []string{"/a", "/b"}) {
		t.Errorf("suffix and repeated flag: %+v, %v", a, err)
	}
}
