package hostargs

import (
	"flag"
	"fmt"
	"io"
)

// Exit codes of `nebula-host compile` besides 0 and the host's usage error.
const (
	// ExitCompileInvalid: the module is invalid or exceeds a compile limit;
	// stderr holds the reason.
	ExitCompileInvalid = 1
	// ExitCompileCache: the module is valid but the cache directory failed
	// (full, I/O error); stderr holds the reason.
	ExitCompileCache = 3
	// ExitCompileMemory: compiling exceeded MaxMemory.
	ExitCompileMemory = 4
)

// CompileSubcommand is the first argument of `nebula-host compile`.
const CompileSubcommand = "compile"

// Compile is what the shim tells `nebula-host compile`, which reads the
// module on stdin.
type Compile struct {
	// CacheDir is --cache, the cache entry directory to fill; "": only
	// validate the module.
	CacheDir string
	// MemoryLimit is --memory-limit, the task's linear memory per instance
	// in bytes, checked against the module's minimum; 0: none.
	MemoryLimit uint64
	// MaxMemory is --max-memory: past this many bytes the compile exits
	// ExitCompileMemory; 0: no bound.
	MaxMemory uint64
}

// CompileResult is what `nebula-host compile` prints on stdout, as JSON,
// when it succeeds.
type CompileResult struct {
	Hit     bool    `json:"hit"`
	Seconds float64 `json:"seconds"`
}

// Argv renders c as nebula-host's arguments, CompileSubcommand first.
func (c Compile) Argv() []string {
	r := renderer{argv: []string{CompileSubcommand}}
	r.str("cache", c.CacheDir)
	r.size("memory-limit", c.MemoryLimit)
	r.size("max-memory", c.MaxMemory)
	return r.argv
}

// ParseCompile parses the arguments that follow CompileSubcommand.
func ParseCompile(argv []string) (Compile, error) {
	var c Compile
	fs, finish := c.flagSet()
	if err := fs.Parse(argv); err != nil {
		return Compile{}, err
	}
	if err := finish(); err != nil {
		return Compile{}, err
	}
	if fs.NArg() > 0 {
		return Compile{}, fmt.Errorf("unexpected argument %q: the module is read on stdin", fs.Arg(0))
	}
	return c, nil
}

// CompileUsage writes `nebula-host compile`'s usage to w.
func CompileUsage(w io.Writer) {
	var c Compile
	fs, _ := c.flagSet()
	fs.SetOutput(w)
	fmt.Fprintln(w, "usage: nebula-host compile [flags] < MODULE")
	fs.PrintDefaults()
}

func (c *Compile) flagSet() (fs *flag.FlagSet, finish func() error) {
	fs = flag.NewFlagSet("nebula-host compile", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p parser
	fs.StringVar(&c.CacheDir, "cache", "", "cache `DIR` to fill (without it, only validate)")
	p.size(fs, &c.MemoryLimit, "memory-limit", "the task's memory limit per instance in `BYTES`, checked against the module's minimum")
	p.size(fs, &c.MaxMemory, "max-memory", "exit "+fmt.Sprint(ExitCompileMemory)+" once this process uses more than `BYTES` (0: no bound)")
	return fs, p.finish
}
