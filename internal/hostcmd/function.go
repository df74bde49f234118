package hostcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/spawn"
	"nebula.dev/nebula/wasmhost"
)

// functionFlags are the function-mode flags: the task's knobs, rendered by
// oci.Rewrite, plus what the shim measured at Create.
type functionFlags struct {
	timeout          time.Duration
	concurrency      int
	maxBody          int64
	bodyBudget       int64
	metricsPort      int
	replyType        string
	replySource      string
	replyContentType string
	maxConnections   int
	protocol         string
	containerID      string
	createdAt        string
	compileCache     string
	compileTime      time.Duration
}

func (f *functionFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.timeout, "timeout", 0, "per-invocation timeout (function mode; default events.DefaultTimeout)")
	fs.IntVar(&f.concurrency, "concurrency", 0, "instances at once (function mode; default GOMAXPROCS)")
	fs.Int64Var(&f.maxBody, "max-body", 0, "request body limit in bytes (function mode)")
	fs.Int64Var(&f.bodyBudget, "body-budget", 0, "bytes all request bodies in flight may hold (function mode; default events' own)")
	fs.IntVar(&f.metricsPort, "metrics-port", oci.DefaultMetricsPort, "port of /metrics (function mode)")
	fs.StringVar(&f.replyType, "reply-type", "", "reply event type (function mode; default: request type + .reply)")
	fs.StringVar(&f.replySource, "reply-source", "", "reply event source (function mode)")
	fs.StringVar(&f.replyContentType, "reply-content-type", "", "reply datacontenttype (function mode; default: detected)")
	fs.IntVar(&f.maxConnections, "max-connections", 0, "open connections of the event port at most (function mode; default events.DefaultMaxConnections)")
	fs.StringVar(&f.protocol, "protocol", "", "auto, cloudevents or http (function mode; default auto)")
	fs.StringVar(&f.containerID, "container-id", "", "the task's id: the function's name when K_SERVICE is unset")
	fs.StringVar(&f.createdAt, "created-at", "", "when the shim's Create began (RFC 3339), for nebula_task_ready_seconds")
	fs.StringVar(&f.compileCache, "compile-cache", "", "hit or miss: how the shim compiled the module")
	fs.DurationVar(&f.compileTime, "compile-time", 0, "how long the shim took to compile the module")
}

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
func serveFunction(f *functionFlags, inv abi.Invoker, mod *wasmhost.Module, stderr io.Writer, sigs <-chan os.Signal) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nebula: "+format+"\n", a...)
		return ExitHostError
	}
	port := oci.DefaultPort
	if p := os.Getenv("PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fail("PORT=%q: want a TCP port", p)
		}
		port = n
	}
	if port == f.metricsPort {
		return fail("PORT and the metrics port are both %d", port)
	}
	name := os.Getenv("K_SERVICE")
	if name == "" {
		name = f.containerID
	}
	if name == "" {
		name, _ = os.Hostname()
	}
	cfg := events.NewConfig().WithFunction(name).WithStderr(stderr)
	if f.timeout > 0 {
		cfg = cfg.WithTimeout(f.timeout)
	}
	if f.concurrency > 0 {
		cfg = cfg.WithConcurrency(f.concurrency)
	}
	if f.maxBody > 0 {
		cfg = cfg.WithMaxBody(f.maxBody)
	}
	if f.bodyBudget > 0 {
		cfg = cfg.WithBodyBudget(f.bodyBudget)
	}
	if f.replyType != "" {
		cfg = cfg.WithReplyType(f.replyType)
	}
	if f.replySource != "" {
		cfg = cfg.WithReplySource(f.replySource)
	}
	if f.replyContentType != "" {
		cfg = cfg.WithReplyContentType(f.replyContentType)
	}
	if f.protocol != "" {
		cfg = cfg.WithProtocol(events.Protocol(f.protocol))
	}
	cfg = cfg.WithMaxConnections(connectionCap(f.maxConnections, stderr))
	srv, err := events.New(inv, cfg)
	if err != nil {
		return fail("%v", err)
	}
	tuneGC()
	if f.compileCache != "" {
		srv.ObserveCompile(f.compileTime, f.compileCache == "hit")
	} else if mod != nil {
		srv.ObserveCompile(mod.CompileTime(), mod.CacheHit())
	}

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return fail("listening for events: %v", err)
	}
	mln, err := net.Listen("tcp", ":"+strconv.Itoa(f.metricsPort))
	if err != nil {
		ln.Close()
		return fail("listening for metrics: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ctx, ln) }()
	go func() { served <- srv.ServeMetrics(ctx, mln) }()

	ready := "unknown"
	if created, err := time.Parse(time.RFC3339Nano, f.createdAt); err == nil {
		d := time.Since(created)
		srv.SetTaskReady(d)
		ready = d.Round(time.Microsecond).String()
	}
	fmt.Fprintf(stderr, "nebula: function %s (%s) serving events on :%d, metrics on :%d; ready %s after Create\n",
		name, inv.Runtime(), port, f.metricsPort, ready)

	select {
	case sig := <-sigs:
		fmt.Fprintf(stderr, "nebula: %v: draining in-flight invocations\n", sig)
		if err := srv.Shutdown(context.Background()); err != nil {
			return fail("shutdown: %v", err)
		}
		if s, ok := sig.(syscall.Signal); ok && s == syscall.SIGQUIT {
			return wasmhost.ExitCodeSignalBase + int(s)
		}
		return 0
	case err := <-served:
		return fail("serving: %v", err)
	}
}
