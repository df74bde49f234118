package events

import (
	"io"
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
	replyType   string
	replySource string
	replyCT     string
	stderr      io.Writer
	registerer  prometheus.Registerer

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
func (c Config) WithConcurrency(n int) Config { c.concurrency = n; return c }

// WithQueue bounds the requests waiting for a slot: at most length of them,
// each for at most maxWait. A request beyond either bound gets 503 with
// Retry-After. length 0 disables queueing (every request finding all slots
// busy gets 503); a negative length or maxWait 0 keeps the default
// (DefaultQueueMult × concurrency, the invocation timeout).
//
// # Notes
//
// Requests reading their body count as queued, so the memory held by
// request bodies is bounded by (concurrency + length) × max body.
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
