package oci

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/internal/hostargs"
)

// AnnotationPrefix prefixes Nebula's knobs as annotations; EnvPrefix as
// environment variables (NEBULA_MEMORY_LIMIT for memory-limit).
const (
	AnnotationPrefix = "nebula.dev/"
	EnvPrefix        = "NEBULA_"
)

// Mode is what a task does: run a program once, or serve events. It is
// the host program's --mode.
type Mode = hostargs.Mode

const (
	ModeRun      = hostargs.ModeRun
	ModeFunction = hostargs.ModeFunction
)

// Runtime is what runs the task's guest.
type Runtime string

const (
	RuntimeWasm Runtime = "wasm"
	RuntimeRunc Runtime = "runc"
)

// Ports a function task listens on unless told otherwise: $PORT (Knative's
// contract) for events, the metrics-port knob for /metrics. Other defaults
// (timeout, body limit, concurrency) belong to package events.
const (
	DefaultPort        = 8080
	DefaultMetricsPort = 9464
)

// KnativeReservedPorts are the ports Knative's queue-proxy and friends use in
// a pod; Nebula never listens on them by default and refuses them as
// metrics-port.
var KnativeReservedPorts = []int{8012, 8013, 8022, 9090, 9091, 8008}

// Knobs are a task's settings from nebula.dev/<name> annotations and
// NEBULA_<NAME> environment variables (the annotation wins). Zero values
// mean "not set".
type Knobs struct {
	Runtime          Runtime
	Mode             Mode
	Timeout          time.Duration
	Concurrency      int
	MemoryLimit      uint64
	MaxBody          int64
	MetricsPort      int
	ReplyType        string
	ReplySource      string
	ReplyContentType string
	MaxConnections   int
	Protocol         string
	// CompileTimeout and CompileMemory bound the shim's compile of a wasm
	// module at Create (DefaultCompileTimeout, DefaultCompileMemory).
	CompileTimeout time.Duration
	CompileMemory  uint64
}

// Bounds of compiling a wasm module at Create, unless the compile-timeout
// and compile-memory knobs say otherwise. The timeout leaves room, within
// the kubelet's 2-minute CreateContainer deadline, for the rest of Create;
// the 3 MB Go test probe compiles in about 1-2 s with a peak RSS of 78 MB.
const (
	DefaultCompileTimeout = 60 * time.Second
	DefaultCompileMemory  = 2 << 30

	// MaxCompileTimeout bounds the knob: a Create longer than this is
	// beyond any client's patience.
	MaxCompileTimeout = 10 * time.Minute
	// MinCompileMemory bounds the knob from below: the compiler's own
	// runtime needs some.
	MinCompileMemory = 64 << 20
)

// KnobError reports an invalid knob value: which knob, where it came from,
// the value and why it is refused.
type KnobError struct {
	Knob   string // e.g. "memory-limit"
	Source string // "annotation nebula.dev/memory-limit" or "env NEBULA_MEMORY_LIMIT"
	Value  string
	Err    error
}

func (e *KnobError) Error() string {
	return fmt.Sprintf("invalid knob %s=%q (%s): %v", e.Knob, e.Value, e.Source, e.Err)
}

func (e *KnobError) Unwrap() error { return e.Err }

type knob struct {
	name  string
	parse func(k *Knobs, v string) error
}

var knobs = []knob{
	{"runtime", func(k *Knobs, v string) error {
		switch Runtime(v) {
		case RuntimeWasm, RuntimeRunc:
			k.Runtime = Runtime(v)
			return nil
		}
		return errors.New(`want "wasm" or "runc"`)
	}},
	{"mode", func(k *Knobs, v string) error {
		switch Mode(v) {
		case ModeRun, ModeFunction:
			k.Mode = Mode(v)
			return nil
		}
		return errors.New(`want "run" or "function"`)
	}},
	{"timeout", func(k *Knobs, v string) (err error) {
		k.Timeout, err = positiveDuration(v)
		return err
	}},
	{"concurrency", func(k *Knobs, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return errors.New("want an integer from 1 to 10000")
		}
		k.Concurrency = n
		return nil
	}},
	{"memory-limit", func(k *Knobs, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < 64<<10 {
			return errors.New("want at least 64Ki (one wasm page)")
		}
		k.MemoryLimit = n
		return nil
	}},
	{"max-body", func(k *Knobs, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < 1 || n > 1<<40 {
			return errors.New("want a size from 1 byte to 1Ti")
		}
		k.MaxBody = int64(n)
		return nil
	}},
	{"metrics-port", func(k *Knobs, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return errors.New("want a TCP port from 1 to 65535")
		}
		for _, r := range KnativeReservedPorts {
			if n == r {
				return fmt.Errorf("port %d is reserved by Knative", n)
			}
		}
		k.MetricsPort = n
		return nil
	}},
	{"compile-timeout", func(k *Knobs, v string) (err error) {
		if k.CompileTimeout, err = positiveDuration(v); err != nil {
			return err
		}
		if k.CompileTimeout > MaxCompileTimeout {
			return fmt.Errorf("want at most %v", MaxCompileTimeout)
		}
		return nil
	}},
	{"compile-memory", func(k *Knobs, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < MinCompileMemory {
			return errors.New("want at least 64Mi")
		}
		k.CompileMemory = n
		return nil
	}},
	{"reply-type", func(k *Knobs, v string) error {
		if strings.TrimSpace(v) == "" {
			return errors.New("want a non-empty CloudEvents type")
		}
		if err := checkString(v); err != nil {
			return err
		}
		k.ReplyType = v
		return nil
	}},
	{"reply-source", func(k *Knobs, v string) error {
		if err := checkString(v); err != nil {
			return err
		}
		if _, err := url.Parse(v); err != nil || v == "" {
			return errors.New("want a non-empty URI-reference")
		}
		k.ReplySource = v
		return nil
	}},
	{"reply-content-type", func(k *Knobs, v string) error {
		if err := checkString(v); err != nil {
			return err
		}
		if _, _, err := mime.ParseMediaType(v); err != nil {
			return fmt.Errorf("want a media type: %v", err)
		}
		k.ReplyContentType = v
		return nil
	}},
	{"max-connections", func(k *Knobs, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65536 {
			return errors.New("want an integer from 1 to 65536")
		}
		k.MaxConnections = n
		return nil
	}},
	{"protocol", func(k *Knobs, v string) error {
		switch v {
		case "auto", "cloudevents", "http":
			k.Protocol = v
			return nil
		}
		return errors.New(`want "auto", "cloudevents" or "http"`)
	}},
}

// KnobNames lists the knobs Nebula reads, for documentation and errors.
func KnobNames() []string {
	names := make([]string, len(knobs))
	for i, kn := range knobs {
		names[i] = kn.name
	}
	return names
}

// EnvName is the environment variable for knob name: NEBULA_MEMORY_LIMIT
// for memory-limit.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ParseKnobs reads and validates every knob of spec. The first invalid
// value is returned as a *KnobError; an unknown nebula.dev/ annotation is
// an error too.
func ParseKnobs(spec *specs.Spec) (Knobs, error) {
	var k Knobs
	known := make(map[string]bool, len(knobs))
	env := envMap(spec)
	for _, kn := range knobs {
		known[AnnotationPrefix+kn.name] = true
		v, source, ok := lookupKnob(spec, env, kn.name)
		if !ok {
			continue
		}
		if err := kn.parse(&k, v); err != nil {
			return Knobs{}, &KnobError{Knob: kn.name, Source: source, Value: v, Err: err}
		}
	}
	var unknown []string
	for a := range spec.Annotations {
		if strings.HasPrefix(a, AnnotationPrefix) && !known[a] {
			unknown = append(unknown, a)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Knobs{}, fmt.Errorf("unknown annotation %s (Nebula's knobs: %s)", unknown[0], strings.Join(KnobNames(), ", "))
	}
	return k, nil
}

// LookupKnob returns knob name's raw value in spec and where it came from
// ("annotation nebula.dev/<name>" or "env NEBULA_<NAME>").
func LookupKnob(spec *specs.Spec, name string) (value, source string, ok bool) {
	return lookupKnob(spec, envMap(spec), name)
}

func lookupKnob(spec *specs.Spec, env map[string]string, name string) (value, source string, ok bool) {
	if v, ok := spec.Annotations[AnnotationPrefix+name]; ok {
		return v, "annotation " + AnnotationPrefix + name, true
	}
	if v, ok := env[EnvName(name)]; ok {
		return v, "env " + EnvName(name), true
	}
	return "", "", false
}

func envMap(spec *specs.Spec) map[string]string {
	m := map[string]string{}
	if spec.Process == nil {
		return m
	}
	for _, kv := range spec.Process.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			m[k] = v // later entries win, as in execve
		}
	}
	return m
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New(`want a Go duration such as "300ms" or "30s"`)
	}
	if d <= 0 {
		return 0, errors.New("want a positive duration")
	}
	return d, nil
}

// ParseSize parses a byte count with an optional binary suffix: "1048576",
// "64Ki", "256Mi", "2Gi"; the host program's sizes are written the same way.
func ParseSize(v string) (uint64, error) { return hostargs.ParseSize(v) }

// checkString requires v to be a CloudEvents String, as the reply's
// attributes must be: valid UTF-8 without the control characters
// U+0000–U+001F and U+007F–U+009F. It also keeps a NUL out of the host
// program's arguments, which execve cannot pass: the task would be
// created and then fail to start.
func checkString(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("want valid UTF-8 (a CloudEvents String)")
	}
	for _, r := range v {
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			return fmt.Errorf("control character %U (want a CloudEvents String)", r)
		}
	}
	return nil
}
