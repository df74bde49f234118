package oci

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// MinPids is the smallest pids limit (spec.linux.resources.pids.limit) a
// task whose process is the host program may have. The host is a Go
// program: each OS thread counts against the limit, and a Go program that
// cannot create a thread dies. With a limit below 32 the host runs on one
// P; measured then, run mode needed up to 9 threads (the Go probe loading
// its cache on a loaded 2-core machine), so 12 leaves room for function
// mode's listeners. A process function's spawned processes count as well.
const MinPids = 12

// SettingError reports a setting, other than a knob, that Create refuses
// because the task could not start with it: what it is, where it came
// from, the value and why.
type SettingError struct {
	Name   string // e.g. "PORT"
	Source string // e.g. "env PORT"
	Value  string
	Err    error
}

func (e *SettingError) Error() string {
	return fmt.Sprintf("invalid %s=%q (%s): %v", e.Name, e.Value, e.Source, e.Err)
}

func (e *SettingError) Unwrap() error { return e.Err }

// CheckStartable reports, at Create, the settings with which the host
// program would fail as soon as the task starts: PORT not a port or equal
// to the metrics port, a port the task's user may not bind, an environment
// the Go runtime refuses (GOMEMLIMIT), a pids limit below MinPids. It
// returns nil for a task whose process is not the host program (see
// NeedsRewrite), and a *KnobError or *SettingError otherwise.
func CheckStartable(spec *specs.Spec, d Decision, k Knobs) error {
	if !NeedsRewrite(d, k) {
		return nil
	}
	env := processEnv(spec)
	if v, ok := env["GOMEMLIMIT"]; ok && !validGoMemLimit(v) {
		return &SettingError{Name: "GOMEMLIMIT", Source: "env GOMEMLIMIT", Value: v,
			Err: errors.New(`the host program is a Go program and its runtime refuses this value: want "off" or bytes with an optional B, KiB, MiB, GiB or TiB suffix`)}
	}
	if err := checkPids(spec); err != nil {
		return err
	}
	if k.Mode == ModeFunction {
		return checkPorts(spec, env, k)
	}
	return nil
}

func checkPids(spec *specs.Spec) error {
	if spec.Linux == nil || spec.Linux.Resources == nil || spec.Linux.Resources.Pids == nil || spec.Linux.Resources.Pids.Limit == nil {
		return nil
	}
	limit := *spec.Linux.Resources.Pids.Limit
	if limit <= 0 || limit >= MinPids { // 0 or -1: no limit
		return nil
	}
	return &SettingError{Name: "pids limit", Source: "linux.resources.pids.limit, e.g. ctr run --pids-limit", Value: strconv.FormatInt(limit, 10),
		Err: fmt.Errorf("Nebula's host program needs at least %d (each of its OS threads counts)", MinPids)}
}

func checkPorts(spec *specs.Spec, env map[string]string, k Knobs) error {
	port := DefaultPort
	portSource := fmt.Sprintf("PORT unset, default %d", DefaultPort)
	if v, ok := env["PORT"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return &SettingError{Name: "PORT", Source: "env PORT", Value: v,
				Err: errors.New("want a TCP port from 1 to 65535 (function mode serves events on $PORT)")}
		}
		port, portSource = n, "env PORT"
	}
	metrics, metricsSource, metricsValue := DefaultMetricsPort, "", ""
	if k.MetricsPort > 0 {
		metrics = k.MetricsPort
		metricsValue, metricsSource, _ = lookupKnob(spec, envMap(spec), "metrics-port")
	}
	if port == metrics {
		if metricsSource != "" {
			return &KnobError{Knob: "metrics-port", Source: metricsSource, Value: metricsValue,
				Err: fmt.Errorf("the events port is %d too (%s)", port, portSource)}
		}
		return &SettingError{Name: "PORT", Source: portSource, Value: strconv.Itoa(port),
			Err: fmt.Errorf("%d is the metrics port (knob metrics-port, default %d): set another PORT or metrics-port", port, DefaultMetricsPort)}
	}
	if reason := cannotBind(spec, min(port, metrics)); reason != "" {
		if port < metrics {
			return &SettingError{Name: "PORT", Source: portSource, Value: strconv.Itoa(port), Err: errors.New(reason)}
		}
		return &KnobError{Knob: "metrics-port", Source: metricsSource, Value: metricsValue, Err: errors.New(reason)}
	}
	return nil
}

// cannotBind says why the task's process could not listen on port, or ""
// if it could or the spec does not tell: a port below 1024 needs root,
// CAP_NET_BIND_SERVICE, or a lower net.ipv4.ip_unprivileged_port_start in
// the task's own network namespace (1024 in a new one).
func cannotBind(spec *specs.Spec, port int) string {
	if port >= 1024 || spec.Process == nil || spec.Process.User.UID == 0 {
		return ""
	}
	if c := spec.Process.Capabilities; c != nil && slices.Contains(c.Effective, "CAP_NET_BIND_SERVICE") {
		return ""
	}
	if spec.Linux == nil || !slices.ContainsFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.NetworkNamespace && ns.Path == ""
	}) {
		return "" // the host's or another's network namespace: its sysctl is not in the spec
	}
	start := 1024
	if v, ok := spec.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			start = n
		}
	}
	if port >= start {
		return ""
	}
	return fmt.Sprintf("user %d may not listen on port %d: it lacks CAP_NET_BIND_SERVICE and net.ipv4.ip_unprivileged_port_start is %d", spec.Process.User.UID, port, start)
}

// processEnv maps the spec's environment, later entries winning.
func processEnv(spec *specs.Spec) map[string]string {
	m := map[string]string{}
	if spec.Process == nil {
		return m
	}
	for _, kv := range spec.Process.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// validGoMemLimit reports whether the Go runtime accepts v as GOMEMLIMIT
// (runtime.readGOMEMLIMIT): empty, "off", or a decimal byte count with an
// optional B, KiB, MiB, GiB or TiB suffix, below 2^63.
func validGoMemLimit(v string) bool {
	if v == "" || v == "off" {
		return true
	}
	num, mult := v, uint64(1)
	for _, s := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(v, s.suffix) {
			num, mult = strings.TrimSuffix(v, s.suffix), s.mult
			break
		}
	}
	if num == "" || strings.Trim(num, "0123456789") != "" {
		return false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return err == nil && n <= (1<<63-1)/mult
}
