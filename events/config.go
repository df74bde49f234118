package events

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of a Config. They follow Knative Serving where it has an opinion:
// its default revision timeout is 300s, and its queue-proxy queues up to ten
// requests per unit of container concurrency and waits for a slot until the
// request's deadline.
const (
	DefaultTimeout   = 5 * time.Minute
	DefaultMaxBody   = 10 << 20 // 10 MiB
	DefaultQueueMult = 10       // queue length = DefaultQueueMult × concurrency

	// DefaultMaxConnections caps the open connections of the event port;
	// MetricsMaxConnections those of the metrics port. Together with the
	// invocations' own files they stay below the 1024 file descriptors a
	// container gets by default.
	DefaultMaxConnections = 512
	MetricsMaxConnections = 32

	// HeaderTimeout bounds the arrival of a request's headers, BodyTimeout
	// that of its body (from the handler's start), IdleTimeout a keep-alive
	// connection with no request, on both ports.
	HeaderTimeout = 10 * time.Second
	BodyTimeout   = 30 * time.Second
	IdleTimeout   = 2 * time.Minute

	// MaxHeaderBytes bounds a request's header block (a larger one gets
	// 431), on both ports.
	MaxHeaderBytes = 64 << 10

	// MaxStreams bounds the concurrent HTTP/2 streams of one connection.
	MaxStreams = 100

	// maxBodyBudget bounds the memory the bodies of all requests in flight
	// may hold at once, unless one max body alone is larger.
	maxBodyBudget = 256 << 20

	// wasmRunningPerCPU bounds the wasm guests that run at once to this
	// many per GOMAXPROCS, whatever the concurrency: see WithConcurrency.
	wasmRunningPerCPU = 2
)

// Protocol says which requests the front door takes as invocations.
type Protocol string

const (
	// ProtocolAuto (the default): CloudEvents, and a POST that is not a
	// CloudEvent as a plain HTTP invocation.
	ProtocolAuto Protocol = "auto"
	// ProtocolCloudEvents: CloudEvents only; anything else is 415.
	ProtocolCloudEvents Protocol = "cloudevents"
	// ProtocolHTTP: every request on the event path, whatever its method
	// and headers, is a plain HTTP invocation.
	ProtocolHTTP Protocol = "http"
)

// Config is the immutable configuration of a Server. The zero value is
// valid but has no function name, which New rejects: start from NewConfig
// and chain the WithXxx methods, each of which returns a modified copy.
//
//	cfg := events.NewConfig().
//		WithFunction(os.Getenv("K_SERVICE")).
//		WithTimeout(30 * time.Second).
//		WithConcurrency(4)
type Config struct {
	function    string
	timeout     time.Duration
	concurrency int
	queueLen    int
	queueWait   time.Duration
	maxBody     int64
	bodyBudget  int64
	replyType   string
	replySource string
	replyCT     string
	stderr      io.Writer
	registerer  prometheus.Registerer
	maxConns    int
	protocol    Protocol
	bodyTimeout time.Duration

	queueLenSet, queueWaitSet bool
}

// NewConfig returns a Config with the defaults: timeout DefaultTimeout,
// concurrency GOMAXPROCS, a queue of DefaultQueueMult × concurrency requests that
// wait at most the timeout, body limit DefaultMaxBody, reply type and
// source derived per request (see WithReplyType, WithReplySource), reply
// content type detected, stderr discarded, metrics in a private registry.
func NewConfig() Config { return Config{} }

// WithFunction names the function: the `function` label of every metric
// and the default reply source `/nebula/<name>`. The host program passes
// K_SERVICE when set, else the container ID. Required.
func (c Config) WithFunction(name string) Config { c.function = name; return c }

// WithTimeout bounds each invocation: the guest is stopped when it passes
// and the request gets 504. Zero means DefaultTimeout.
func (c Config) WithTimeout(d time.Duration) Config { c.timeout = d; return c }

// WithConcurrency sets how many invocations run at once (slots). Zero means
// runtime.GOMAXPROCS(0) at New: guests are CPU-bound, and Go sizes
// GOMAXPROCS from the container's CPU limit.
//
// # Notes
//
// Wasm guests run on the host's own goroutines: with hundreds of them
// spinning, Go's scheduler lets each run 10ms in turn and the goroutines
// that enforce deadlines wait seconds for a turn. So at most 2 ×
// GOMAXPROCS wasm guests run at once whatever n says; the others wait in
// the queue, which keeps its length (the default queue length still derives
// from n). Processes are scheduled by the kernel and are not capped.
func (c Config) WithConcurrency(n int) Config { c.concurrency = n; return c }

// WithMaxConnections caps the open connections of each listener passed to
// Serve. At the cap a new connection evicts the longest-idle connection,
// else the oldest one still sending its first request's headers, else it is
// closed at once (RST). Zero means DefaultMaxConnections.
func (c Config) WithMaxConnections(n int) Config { c.maxConns = n; return c }

// WithProtocol says which requests are invocations; empty means
// ProtocolAuto.
func (c Config) WithProtocol(p Protocol) Config { c.protocol = p; return c }

// WithBodyTimeout bounds the arrival of a request's body, from the start of
// its handler; a body still arriving then gets 408. Zero means BodyTimeout.
func (c Config) WithBodyTimeout(d time.Duration) Config { c.bodyTimeout = d; return c }

// WithQueue bounds the requests waiting for a slot: at most length of them,
// each for at most maxWait. A request beyond either bound gets 503 with
// Retry-After. length 0 disables queueing (every request finding all slots
// busy gets 503); a negative length or maxWait 0 keeps the default
// (DefaultQueueMult × concurrency, the invocation timeout).
//
// # Notes
//
// A request takes its place in the queue once its body has arrived. The
// memory held by bodies in flight is bounded separately: at most
// max(max body, min((concurrency + length) × max body, 256 MiB)), counted as
// bytes arrive; a request that would go past it gets 503.
func (c Config) WithQueue(length int, maxWait time.Duration) Config {
	if length >= 0 {
		c.queueLen, c.queueLenSet = length, true
	}
	if maxWait > 0 {
		c.queueWait, c.queueWaitSet = maxWait, true
	}
	return c
}

// WithMaxBody limits a request's body; a larger one gets 413. Zero means
// DefaultMaxBody.
func (c Config) WithMaxBody(n int64) Config { c.maxBody = n; return c }

// WithBodyBudget bounds the bytes the bodies of all requests in flight may
// hold at once; a request whose body would pass it gets 503 with
// Retry-After. Zero means max(max body, min((concurrency + queue) × max
// body, 256 MiB)). A budget below the max body is raised to it: one body
// must always fit.
//
// # Notes
//
//   - Bodies live on the host's heap, outside the guests' memory: a task
//     with a memory limit must count them (Nebula's shim passes its share
//     of the container's limit here).
func (c Config) WithBodyBudget(n int64) Config { c.bodyBudget = n; return c }

// WithReplyType sets the type of every reply event. Empty (the default)
// means the request's type with ".reply" appended.
func (c Config) WithReplyType(t string) Config { c.replyType = t; return c }

// WithReplySource sets the source of every reply event, a URI-reference.
// Empty (the default) means "/nebula/<function>".
func (c Config) WithReplySource(s string) Config { c.replySource = s; return c }

// WithReplyContentType sets the datacontenttype of every reply. Empty (the
// default) detects it from the guest's stdout: valid JSON is
// "application/json", other valid UTF-8 is "text/plain; charset=utf-8",
// anything else "application/octet-stream".
func (c Config) WithReplyContentType(ct string) Config { c.replyCT = ct; return c }

// WithStderr sets where the guest's stderr goes, normally the task's own
// stderr. Every line is prefixed with "[<event id>] " and written with one
// Write call, so lines of concurrent invocations never interleave mid-line.
// Nil (the default) discards it.
func (c Config) WithStderr(w io.Writer) Config { c.stderr = w; return c }

// WithRegisterer registers the Server's metrics with r instead of a private
// registry.
//
// # Notes
//
// With the default private registry the Server also registers the Go and
// process collectors and MetricsHandler serves it. With a Registerer of your
// own, those collectors are yours to register (prometheus.DefaultRegisterer
// already has them), and MetricsHandler serves r when it is also a
// prometheus.Gatherer (as *prometheus.Registry is), else
// prometheus.DefaultGatherer.
func (c Config) WithRegisterer(r prometheus.Registerer) Config { c.registerer = r; return c }

// check returns an error naming the first invalid setting of c.
func (c Config) check() error {
	if c.function == "" {
		return errors.New("events: function name required (WithFunction)")
	}
	if c.timeout < 0 {
		return fmt.Errorf("events: invalid timeout %v", c.timeout)
	}
	if c.concurrency < 0 {
		return fmt.Errorf("events: invalid concurrency %d", c.concurrency)
	}
	if c.maxBody < 0 {
		return fmt.Errorf("events: invalid max body %d", c.maxBody)
	}
	if c.maxConns < 0 {
		return fmt.Errorf("events: invalid max connections %d", c.maxConns)
	}
	if c.bodyTimeout < 0 {
		return fmt.Errorf("events: invalid body timeout %v", c.bodyTimeout)
	}
	switch c.protocol {
	case "", ProtocolAuto, ProtocolCloudEvents, ProtocolHTTP:
	default:
		return fmt.Errorf("events: invalid protocol %q", c.protocol)
	}
	for _, a := range []struct{ name, v string }{
		{"reply type", c.replyType}, {"reply source", c.replySource}, {"reply content type", c.replyCT},
	} {
		if err := checkString(a.v); err != nil {
			return fmt.Errorf("events: invalid %s %q: %w", a.name, a.v, err)
		}
	}
	if c.replySource != "" {
		if _, err := url.Parse(c.replySource); err != nil {
			return fmt.Errorf("events: invalid reply source %q: not a URI-reference", c.replySource)
		}
	}
	if c.replyCT != "" && !validMediaType(c.replyCT) {
		return fmt.Errorf("events: invalid reply content type %q", c.replyCT)
	}
	return nil
}

// withDefaults returns c with every unset value at its default.
func (c Config) withDefaults() Config {
	if c.protocol == "" {
		c.protocol = ProtocolAuto
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.concurrency == 0 {
		c.concurrency = runtime.GOMAXPROCS(0)
	}
	if c.maxBody == 0 {
		c.maxBody = DefaultMaxBody
	}
	if c.maxConns == 0 {
		c.maxConns = DefaultMaxConnections
	}
	if c.bodyTimeout == 0 {
		c.bodyTimeout = BodyTimeout
	}
	if !c.queueLenSet {
		c.queueLen = DefaultQueueMult * c.concurrency
	}
	if !c.queueWaitSet {
		c.queueWait = c.timeout
	}
	return c
}
