package hostcmd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
	"nebula.dev/nebula/internal/hostargs"
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/spawn"
	"nebula.dev/nebula/wasmhost"
)

// fdReserve is the file descriptors kept for everything but connections:
// listeners, the module's cache, the guests' pipes and files.
const fdReserve = 256

// connectionCap returns the event port's connection cap: the knob, or
// events.DefaultMaxConnections, lowered if the container's RLIMIT_NOFILE
// (1024 by default under containerd) would not hold it beside the metrics
// port's connections and fdReserve. Past the file limit accept fails and
// every client of both ports is refused; under the cap the front door
// sheds connections itself.
func connectionCap(knob int, stderr io.Writer) int {
	want := knob
	if want == 0 {
		want = events.DefaultMaxConnections
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return want
	}
	fit := int(min(rl.Cur, 1<<20)) - events.MetricsMaxConnections - fdReserve
	if fit < want {
		fit = max(fit, 16)
		if knob != 0 {
			fmt.Fprintf(stderr, "nebula: max-connections=%d lowered to %d: RLIMIT_NOFILE is %d\n", knob, fit, rl.Cur)
		}
		return fit
	}
	return want
}

// hostFDs is what the host keeps of RLIMIT_NOFILE for itself, besides the
// connections and the guests' files: listeners, the module's cache
// entry, the runtime's own (epoll, pipes), stdio.
const hostFDs = 64

// guestFileLimit is how many files the wasm guests may hold open at
// once (wasmhost.GuestFS.LimitOpenFiles): half (a file holds two
// descriptors) of what RLIMIT_NOFILE leaves beside hostFDs and, in
// function mode, the connections of both ports, but at least 8. Beyond
// it a guest's open fails, rather than the front door's accept.
func guestFileLimit(a hostargs.Args) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 8
	}
	free := int(min(rl.Cur, 1<<20)) - hostFDs
	if a.Mode == hostargs.ModeFunction {
		free -= connectionCap(a.MaxConnections, io.Discard) + events.MetricsMaxConnections
	}
	return max(free/2, 8)
}

// spawnInvoker runs the entrypoint afresh for every event.
func spawnInvoker(args []string) abi.Invoker {
	wd, err := os.Getwd()
	if err != nil {
		wd = "/"
	}
	return spawn.New(args[0], args[1:], os.Environ(), supervisedConfig(spawn.NewConfig().WithDir(wd)))
}

// serveFunction serves CloudEvents on $PORT with inv until SIGTERM or
// SIGINT, then drains: in-flight invocations finish, new ones are refused,
// and the host exits 0. (SIGKILL, the end of the grace period, is the
// kernel's.)
func serveFunction(a hostargs.Args, inv abi.Invoker, mod *wasmhost.Module, stderr io.Writer, sigs <-chan os.Signal) int {
	port, metricsPort, err := ports(a)
	if err != nil {
		return fail(stderr, ExitHostError, "%v", err)
	}
	name := functionName(a)
	srv, err := events.New(inv, eventsConfig(a, name, stderr))
	if err != nil {
		return fail(stderr, ExitHostError, "%v", err)
	}
	tuneGC()
	if a.CompileTime > 0 {
		srv.ObserveCompile(a.CompileTime, a.CacheHit)
	} else if mod != nil {
		srv.ObserveCompile(mod.CompileTime(), mod.CacheHit())
	}

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return fail(stderr, ExitHostError, "listening for events: %v", err)
	}
	mln, err := net.Listen("tcp", ":"+strconv.Itoa(metricsPort))
	if err != nil {
		ln.Close()
		return fail(stderr, ExitHostError, "listening for metrics: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ctx, ln) }()
	go func() { served <- srv.ServeMetrics(ctx, mln) }()

	ready := "unknown"
	if !a.CreatedAt.IsZero() {
		d := time.Since(a.CreatedAt)
		srv.SetTaskReady(d)
		ready = d.Round(time.Microsecond).String()
	}
	fmt.Fprintf(stderr, "nebula: function %s (%s) serving events on :%d, metrics on :%d; ready %s after Create\n",
		name, inv.Runtime(), port, metricsPort, ready)

	select {
	case sig := <-sigs:
		fmt.Fprintf(stderr, "nebula: %v: draining in-flight invocations\n", sig)
		if err := srv.Shutdown(context.Background()); err != nil {
			return fail(stderr, ExitHostError, "shutdown: %v", err)
		}
		if s, ok := sig.(syscall.Signal); ok && s == syscall.SIGQUIT {
			return wasmhost.ExitCodeSignalBase + int(s)
		}
		return 0
	case err := <-served:
		return fail(stderr, ExitHostError, "serving: %v", err)
	}
}

// ports returns the event port, $PORT (Knative's contract) or
// oci.DefaultPort, and the metrics port, which must differ.
func ports(a hostargs.Args) (port, metricsPort int, err error) {
	port, metricsPort = oci.DefaultPort, oci.DefaultMetricsPort
	if p := os.Getenv("PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return 0, 0, fmt.Errorf("PORT=%q: want a TCP port", p)
		}
		port = n
	}
	if a.MetricsPort != 0 {
		metricsPort = a.MetricsPort
	}
	if port == metricsPort {
		return 0, 0, fmt.Errorf("PORT and the metrics port are both %d", port)
	}
	return port, metricsPort, nil
}

// functionName is the function's name in metrics and replies: $K_SERVICE,
// else the task's id, else the host name.
func functionName(a hostargs.Args) string {
	if name := os.Getenv("K_SERVICE"); name != "" {
		return name
	}
	if a.ContainerID != "" {
		return a.ContainerID
	}
	name, _ := os.Hostname()
	return name
}

// eventsConfig is the front door's configuration: the knobs the shim
// passed, the front door's defaults for the others.
func eventsConfig(a hostargs.Args, name string, stderr io.Writer) events.Config {
	cfg := events.NewConfig().WithFunction(name).WithStderr(stderr)
	if a.Timeout > 0 {
		cfg = cfg.WithTimeout(a.Timeout)
	}
	if a.Concurrency > 0 {
		cfg = cfg.WithConcurrency(a.Concurrency)
	}
	if a.MaxBody > 0 {
		cfg = cfg.WithMaxBody(int64(a.MaxBody))
	}
	if a.BodyBudget > 0 {
		cfg = cfg.WithBodyBudget(int64(a.BodyBudget))
	}
	if a.ReplyType != "" {
		cfg = cfg.WithReplyType(a.ReplyType)
	}
	if a.ReplySource != "" {
		cfg = cfg.WithReplySource(a.ReplySource)
	}
	if a.ReplyContentType != "" {
		cfg = cfg.WithReplyContentType(a.ReplyContentType)
	}
	if a.Protocol != "" {
		cfg = cfg.WithProtocol(events.Protocol(a.Protocol))
	}
	return cfg.WithMaxConnections(connectionCap(a.MaxConnections, stderr))
}
