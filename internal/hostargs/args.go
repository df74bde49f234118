package hostargs

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"nebula.dev/nebula/abi"
)

// Mode is what a task does: run a program once, or serve events.
type Mode string

const (
	ModeRun      Mode = "run"
	ModeFunction Mode = "function"
)

// Args is what the shim tells nebula-host about a task. Each field is one
// flag; Command follows "--".
type Args struct {
	// Mode is --mode; "" is ModeRun.
	Mode Mode
	// Runtime is --runtime: abi.RuntimeWasm ("" too) or, in function
	// mode, abi.RuntimeProcess.
	Runtime string
	// CacheDir is --cache, the module's read-only compilation cache, filled
	// by the shim; a missing or corrupt one only costs a compile.
	CacheDir string
	// Hide is --hide (repeatable): paths hidden from a wasm guest, with
	// everything under them; none given: the host's default, where the
	// shim mounts the host program and the cache.
	Hide []string

	// MemoryLimit is --memory-limit, the linear memory of an instance in
	// bytes; HeapLimit --heap-limit, the host's own soft memory limit
	// (GOMEMLIMIT); StdoutLimit --stdout-limit, what one invocation may
	// write to stdout; BodyBudget --body-budget, what the request bodies in
	// flight may hold. Sizes accept ParseSize's suffixes.
	MemoryLimit uint64
	HeapLimit   uint64
	StdoutLimit uint64
	BodyBudget  uint64

	// The function-mode knobs (package oci's Knobs of the same names).
	Timeout          time.Duration
	Concurrency      int
	MaxBody          uint64
	MetricsPort      int
	ReplyType        string
	ReplySource      string
	ReplyContentType string
	MaxConnections   int
	Protocol         string

	// ContainerID is --container-id, the task's id: the function's name
	// when K_SERVICE is not set.
	ContainerID string
	// CreatedAt is --created-at (RFC 3339), when the shim's Create began.
	CreatedAt time.Time
	// CompileTime is --compile-time, how long the shim took to compile the
	// module, and CacheHit --cache-hit, whether the cache already held it;
	// CompileTime 0: not known, the host reports its own load.
	CompileTime time.Duration
	CacheHit    bool

	// Command is the guest: a module and its arguments (wasm), or the
	// program to spawn per event and its arguments (process).
	Command []string
}

// Argv renders a as nebula-host's arguments (without the program name):
// flags for the non-zero fields, then "--" and Command.
func (a Args) Argv() []string {
	var r renderer
	r.str("cache", a.CacheDir)
	r.str("mode", string(a.Mode))
	r.str("runtime", a.Runtime)
	r.size("memory-limit", a.MemoryLimit)
	r.size("heap-limit", a.HeapLimit)
	r.size("stdout-limit", a.StdoutLimit)
	r.size("body-budget", a.BodyBudget)
	r.duration("timeout", a.Timeout)
	r.int("concurrency", a.Concurrency)
	r.size("max-body", a.MaxBody)
	r.int("metrics-port", a.MetricsPort)
	r.str("reply-type", a.ReplyType)
	r.str("reply-source", a.ReplySource)
	r.str("reply-content-type", a.ReplyContentType)
	r.int("max-connections", a.MaxConnections)
	r.str("protocol", a.Protocol)
	r.str("container-id", a.ContainerID)
	if !a.CreatedAt.IsZero() {
		r.str("created-at", a.CreatedAt.UTC().Format(time.RFC3339Nano))
	}
	r.duration("compile-time", a.CompileTime)
	if a.CacheHit {
		r.argv = append(r.argv, "--cache-hit")
	}
	for _, p := range a.Hide {
		r.str("hide", p)
	}
	return append(append(r.argv, "--"), a.Command...)
}

// Parse parses nebula-host's arguments (without the program name), as
// Argv renders them. Its errors name the flag and the value; -h or --help
// returns an error wrapping flag.ErrHelp.
//
// # Notes
//
//   - The "--" before Command is optional, as with any flag.FlagSet: the
//     first argument that is not a flag starts it.
func Parse(argv []string) (Args, error) {
	var a Args
	fs, finish := a.flagSet()
	if err := fs.Parse(argv); err != nil {
		return Args{}, err
	}
	if err := finish(); err != nil {
		return Args{}, err
	}
	a.Command = fs.Args()
	switch {
	case len(a.Command) == 0:
		return Args{}, errors.New("no module or program to run")
	case a.Mode != "" && a.Mode != ModeRun && a.Mode != ModeFunction:
		return Args{}, fmt.Errorf("--mode %q: want run or function", a.Mode)
	case a.Runtime == abi.RuntimeProcess && a.Mode != ModeFunction,
		a.Runtime != "" && a.Runtime != abi.RuntimeWasm && a.Runtime != abi.RuntimeProcess:
		return Args{}, fmt.Errorf("--runtime %q: want wasm (or process in function mode)", a.Runtime)
	}
	return a, nil
}

// Usage writes nebula-host's usage, as program name, to w.
func Usage(w io.Writer, name string) {
	var a Args
	fs, _ := a.flagSet()
	fs.SetOutput(w)
	fmt.Fprintf(w, "usage: %s [flags] -- MODULE [ARGS...]\n", name)
	fs.PrintDefaults()
}

// flagSet returns the flags of a, silent, and finish, which converts the
// values the flag package cannot (sizes, times) once they are parsed.
func (a *Args) flagSet() (fs *flag.FlagSet, finish func() error) {
	fs = flag.NewFlagSet("nebula-host", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p parser
	fs.StringVar(&a.CacheDir, "cache", "", "read-only compilation cache `DIR` of the module (optional)")
	fs.StringVar((*string)(&a.Mode), "mode", "", "`run` the module once (default), or serve events as a function")
	fs.StringVar(&a.Runtime, "runtime", "", "what runs the guest: `wasm` (default), or (function mode) process")
	fs.Func("hide", "hide `PATH` and everything under it from the guest (repeatable; default: where Nebula mounts its own files)", func(v string) error {
		a.Hide = append(a.Hide, v)
		return nil
	})
	p.size(fs, &a.MemoryLimit, "memory-limit", "memory limit per instance in `BYTES` (suffix Ki, Mi, Gi or Ti allowed; 0: 4 GiB)")
	p.size(fs, &a.HeapLimit, "heap-limit", "the host's own soft memory limit in `BYTES` (GOMEMLIMIT, which wins; 0: none)")
	p.size(fs, &a.StdoutLimit, "stdout-limit", "what one invocation may write to stdout, in `BYTES` (function mode; 0: the host's default)")
	p.size(fs, &a.BodyBudget, "body-budget", "`BYTES` all request bodies in flight may hold (function mode; 0: the front door's default)")
	fs.DurationVar(&a.Timeout, "timeout", 0, "per-invocation timeout (function mode; 0: the front door's default)")
	fs.IntVar(&a.Concurrency, "concurrency", 0, "instances at once (function mode; 0: GOMAXPROCS)")
	p.size(fs, &a.MaxBody, "max-body", "request body limit in `BYTES` (function mode)")
	fs.IntVar(&a.MetricsPort, "metrics-port", 0, "`PORT` of /metrics (function mode; 0: Nebula's default)")
	fs.StringVar(&a.ReplyType, "reply-type", "", "reply event type (function mode; default: request type + .reply)")
	fs.StringVar(&a.ReplySource, "reply-source", "", "reply event source (function mode)")
	fs.StringVar(&a.ReplyContentType, "reply-content-type", "", "reply datacontenttype (function mode; default: detected)")
	fs.IntVar(&a.MaxConnections, "max-connections", 0, "open connections of the event port at most (function mode; 0: the front door's default)")
	fs.StringVar(&a.Protocol, "protocol", "", "auto, cloudevents or http (function mode; default auto)")
	fs.StringVar(&a.ContainerID, "container-id", "", "the task's id: the function's name when K_SERVICE is unset")
	p.time(fs, &a.CreatedAt, "created-at", "when the shim's Create began, an RFC 3339 `TIME` (for nebula_task_ready_seconds)")
	fs.DurationVar(&a.CompileTime, "compile-time", 0, "how long the shim took to compile the module (0: not known)")
	fs.BoolVar(&a.CacheHit, "cache-hit", false, "the shim found the module compiled in the cache")
	return fs, p.finish
}

// renderer collects flags.
type renderer struct{ argv []string }

func (r *renderer) str(name, v string) {
	if v != "" {
		r.argv = append(r.argv, "--"+name, v)
	}
}

func (r *renderer) size(name string, v uint64) {
	if v != 0 {
		r.str(name, strconv.FormatUint(v, 10))
	}
}

func (r *renderer) int(name string, v int) {
	if v != 0 {
		r.str(name, strconv.Itoa(v))
	}
}

func (r *renderer) duration(name string, v time.Duration) {
	if v != 0 {
		r.str(name, v.String())
	}
}

// parser holds the flags given as strings until finish converts them, so
// that the errors read `--memory-limit "lots": want bytes ...`.
type parser struct{ conversions []func() error }

func (p *parser) size(fs *flag.FlagSet, dst *uint64, name, usage string) {
	fs.Func(name, usage, func(v string) error {
		p.conversions = append(p.conversions, func() error {
			n, err := ParseSize(v)
			if err == nil && n > 1<<62 {
				err = errors.New("want bytes, at most 4Ei")
			}
			if err != nil {
				return fmt.Errorf("--%s %q: %w", name, v, err)
			}
			*dst = n
			return nil
		})
		return nil
	})
}

func (p *parser) time(fs *flag.FlagSet, dst *time.Time, name, usage string) {
	fs.Func(name, usage, func(v string) error {
		p.conversions = append(p.conversions, func() error {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return fmt.Errorf("--%s %q: want an RFC 3339 time", name, v)
			}
			*dst = t
			return nil
		})
		return nil
	})
}

func (p *parser) finish() error {
	for _, c := range p.conversions {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

// ParseSize parses a byte count with an optional binary suffix: "1048576",
// "64Ki", "256Mi", "2Gi".
func ParseSize(v string) (uint64, error) {
	mult := uint64(1)
	num := v
	for _, s := range []struct {
		suffix string
		mult   uint64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}} {
		if strings.HasSuffix(v, s.suffix) {
			num, mult = strings.TrimSuffix(v, s.suffix), s.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, errors.New(`want bytes with an optional Ki, Mi, Gi or Ti suffix, e.g. "64Mi"`)
	}
	if n > (1<<64-1)/mult {
		return 0, errors.New("size overflows 64 bits")
	}
	return n * mult, nil
}
