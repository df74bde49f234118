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
// # Hostile clients
//
// Every resource a client can hold is bounded, and none is taken before the
// client has sent what it costs: headers within HeaderTimeout and
// MaxHeaderBytes; the body within the body timeout (BodyTimeout), read
// into a buffer that grows as bytes arrive (a declared Content-Length is
// only compared with the limit), all bodies in flight within a memory
// budget; a slot and a place in the queue only once the body has arrived
// and parsed; keep-alive connections within IdleTimeout; open connections
// per listener within a cap (WithMaxConnections; MetricsMaxConnections on
// the metrics port), where a new connection evicts one idle or still
// sending its first headers for a second, or is reset at once; HTTP/2
// streams per connection within MaxStreams.
//
// # Why it is built this way
//
// Client mistakes are never 5xx. Knative Eventing retries every 5xx (and
// 404, 408, 409, 429) and drops other 4xx, so a malformed event answered
// 500 — which sdk-go's own receiver does for malformed JSON, batches and bad
// extension names — would be a poison message retried until it reaches the
// dead-letter sink. Here it is 400 (unparsable: drop) or 415 (not
// understood: drop), as the CloudEvents Web Hook spec and Knative's
// data-plane spec say. A function that fails is 500; one that is too slow
// 504; a front door that is full 503, as Knative's queue-proxy answers.
//
// Header values are unquoted and percent-decoded, and the reply's encoded,
// as the HTTP binding §3.1.3.2 requires, although sdk-go does neither
// (sdk-go#1331): a value must then be a CloudEvents String (valid UTF-8, no
// control characters), and a malformed escape ("100%") is a 400. Where
// sdk-go and the specification differ, the specification wins; each such
// rule has a test citing its section.
//
// Binary mode, the default of sdk-go and Knative, is parsed by this package
// directly from the request's headers (which header is which attribute,
// the first value wins, extension names are letters and digits, source a
// URI-reference, time RFC 3339 with "t" and "z" allowed, dataschema an
// absolute URI, datacontenttype an RFC 2046 media type): a fuzz test holds
// it to what sdk-go's binding.ToEvent and Validate accept of the decoded
// values. Structured mode is parsed with the JSON format's own rules (see
// parseStructured): member names are attribute names (lower-case letters
// and digits), null is absent, an extension number is an Integer, data and
// data_base64 exclude each other, and JSON data without datacontenttype is
// application/json.
//
// Only specversion 1.0 is accepted; 0.3 is answered 415. Knative and every
// current SDK send 1.0, and the CE_* contract is 1.0's attribute set.
//
// CE_TIME is normalised as sdk-go prints times: RFC 3339 in UTC. CE_SOURCE
// and CE_DATASCHEMA are the values as sent. JSON extension values that are
// not strings (Integers, booleans) are their canonical strings.
//
// The reply mirrors the request's mode: binary in, binary out; structured
// in, structured out (sdk-go replies binary whatever came in; a structured
// sender expects structured back). Its id is a new UUID, its time now, its
// type the request's type + ".reply" and its source "/nebula/<function>"
// unless configured. Its datacontenttype, unless configured, is detected:
// valid JSON is application/json, other valid UTF-8 text/plain;
// charset=utf-8, anything else application/octet-stream. In structured
// mode the data is a JSON value for application/json or text/json when it
// is valid JSON, a JSON string for valid UTF-8 of a non-JSON type, and
// data_base64 otherwise — the only encoding every receiver, sdk-go v2.16.2
// included, decodes back to the same bytes whatever the type.
//
// An event whose client went away (connection closed, HTTP/2 stream reset)
// stops its guest: nobody is left to read the reply, and Knative will retry
// it. It is counted with code 499.
//
// # Concurrency
//
// Concurrency slots run invocations; a request that finds them all busy
// waits in a FIFO queue (a channel's blocked senders are served in order)
// for at most the queue wait, and a request beyond the queue length gets
// 503 at once. A request takes its place in the queue once its body has
// arrived. The defaults follow Knative's queue-proxy: a queue of 10 ×
// concurrency, waiting up to the invocation timeout. Retry-After is 1
// second: slots free up in milliseconds. Wasm guests running at once are
// capped at 2 × GOMAXPROCS whatever the concurrency (see WithConcurrency):
// more CPU-bound guests than CPUs only delay the goroutines that enforce
// their deadlines.
//
// # Metrics
//
// nebula_invocations_total counts every request on the event path but
// OPTIONS, probes and health checks, 4xx included, by status; its known
// codes start at zero so rates exist from the first scrape.
// nebula_invocation_duration_seconds observes the same requests from arrival
// to the response written; the startup and execution histograms observe the
// phases an invoker reported (non-zero). Histograms have classic
// buckets from 10µs to 30s (1, 2.5, 5 per decade) and native buckets (factor 1.1, at most 160
// buckets, reset at most hourly, so their memory is bounded whatever the
// latencies). The labels are fixed at New and the label-bound observers
// looked up once. The host program records nebula_module_compile_seconds
// and nebula_task_ready_seconds with ObserveCompile and SetTaskReady.
//
// # Health
//
// GET (or HEAD) /healthz, /health/readiness and /health/liveness answer 200
// as soon as the Server exists (readiness turns 503 once Shutdown began, liveness
// stays 200). Kubernetes and Knative probes (User-Agent kube-probe/…, a
// K-Network-Probe header) are answered like readiness on any path. None is
// an invocation; other methods on those paths are events like anywhere else.
package events
