// Package events is the front door of a function-mode task: it receives
// CloudEvents over HTTP on the task's $PORT, runs each in a fresh instance
// through an abi.Invoker (a wasm instance, or a spawned process with package
// spawn), replies, and exposes the invocation metrics.
//
//	srv, err := events.New(invoker, events.NewConfig().
//		WithFunction(name).           // K_SERVICE, else the container ID
//		WithTimeout(30*time.Second).
//		WithStderr(os.Stderr))
//	go srv.ServeMetrics(ctx, metricsListener) // :9464
//	go srv.Serve(ctx, listener)               // $PORT, HTTP/1.1 and h2c
//	<-sigterm
//	srv.Shutdown(graceCtx)
//
// # The contract
//
// A CloudEvent (binary or structured mode): stdin is the event's data,
// decoded; CE_SPECVERSION, CE_ID, CE_SOURCE, CE_TYPE, and where present
// CE_SUBJECT, CE_TIME, CE_DATASCHEMA, CE_DATACONTENTTYPE and CE_<EXTENSION>
// are added to the environment; stdout is the reply's data.
//
// A plain HTTP request (a POST that is not a CloudEvent, or any request
// with WithProtocol(ProtocolHTTP)): stdin is the body, the environment is
// CGI/1.1's (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE,
// CONTENT_LENGTH, REMOTE_ADDR, HTTP_<HEADER>, ...), and stdout is the reply:
// a CGI header block (Status: 201 Created, Content-Type, other headers, an
// empty line) then the body, or, when stdout does not start with a Status,
// Content-Type or Location line, all of it as the body of a 200.
//
// Both: W3C Trace Context (the traceparent and tracestate headers, else the
// event's distributed-tracing extension) becomes TRACEPARENT and TRACESTATE
// and is echoed in the reply; stderr goes to the task's stderr, every line
// prefixed with "[<event id>] " (a plain request's X-Request-Id, else a new
// UUID). Statuses:
//
//	200  reply event (stdout not empty), in the request's mode; plain HTTP:
//	     the guest's Status, 200 by default
//	202  exit 0 with empty stdout, no body (CloudEvents)
//	400  malformed CloudEvent: bad JSON, a rule of the JSON format broken,
//	     missing or invalid attribute, bad percent-encoding, bad extension
//	     name, ce-datacontenttype header, unreadable body
//	405  not POST (Allow: POST); OPTIONS answers 200 with Allow: POST
//	408  the body did not arrive within the body timeout
//	413  body over the limit
//	415  batch, unknown structured format, specversion other than 1.0; with
//	     ProtocolCloudEvents, anything that is not a CloudEvent
//	431  header block over MaxHeaderBytes (net/http)
//	500  exit status ≠ 0, trap, memory limit, stdout over its cap, a
//	     malformed CGI header block
//	503  overload, bodies over their memory budget, or shutting down, with
//	     Retry-After
//	504  timeout
//	499  (metrics only) the client went away and the guest was stopped
//
// Every response, errors and health checks included, carries
// `Server-Timing: queue;dur=…, start;dur=…, exec;dur=…, total;dur=…` in
// milliseconds with microsecond precision: queue is the wait for a slot,
// start and exec are the invoker's Startup and Execution, total is from the
// request's arrival to the response's headers. Phases that did not happen
// are 0.
//
// # Limits
//
// Every resource a client can hold is bounded, and none is taken before the
// client has sent what it costs: headers (HeaderTimeout, MaxHeaderBytes),
// the body (BodyTimeout, the body limit, a memory budget for all bodies in
// flight), a slot or a place in the queue (only once the body has arrived
// and parsed), idle connections (IdleTimeout), open connections per
// listener (WithMaxConnections; MetricsMaxConnections on the metrics port)
// and HTTP/2 streams (MaxStreams). A request that finds every slot busy
// waits in a FIFO queue (10 × concurrency, for at most the invocation
// timeout by default); beyond it, 503 with Retry-After: 1. Wasm guests
// running at once are capped at 2 × GOMAXPROCS whatever the concurrency.
//
// Client mistakes are 4xx, never 5xx (Knative retries 5xx); where sdk-go
// and the CloudEvents specification differ, the specification wins. The
// reasons for these choices, and for the parsing rules of each mode, are
// in docs/rationale.md.
//
// # Metrics
//
// nebula_invocations_total counts every request on the event path but
// OPTIONS, probes and health checks, 4xx included, by status; its known
// codes start at zero so rates exist from the first scrape.
// nebula_invocation_duration_seconds observes the same requests from arrival
// to the response written; the startup and execution histograms observe the
// phases an invoker reported (non-zero). Histograms have classic buckets
// from 10µs to 30s (1, 2.5, 5 per decade) and native buckets (factor 1.1,
// at most 160 buckets, reset at most hourly). The host program records nebula_module_compile_seconds
// and nebula_task_ready_seconds with ObserveCompile and SetTaskReady.
//
// # Health
//
// GET (or HEAD) /healthz, /health/readiness and /health/liveness answer 200
// as soon as the Server exists (readiness turns 503 once Shutdown began,
// liveness stays 200). Kubernetes and Knative probes (User-Agent kube-probe/…, a
// K-Network-Probe header) are answered like readiness on any path. None is
// an invocation; other methods on those paths are events like anywhere else.
package events
