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
// # The contract (DESIGN.md, Function ABI)
//
// stdin is the event's data, decoded; CE_SPECVERSION, CE_ID, CE_SOURCE,
// CE_TYPE, and where present CE_SUBJECT, CE_TIME, CE_DATASCHEMA,
// CE_DATACONTENTTYPE and CE_<EXTENSION> are added to the environment;
// stdout is the reply's data; stderr goes to the task's stderr, every line
// prefixed with "[<event id>] ". Statuses:
//
//	200  reply event (stdout not empty), in the request's mode
//	202  exit 0 with empty stdout, no body
//	400  malformed CloudEvent: bad JSON, missing or invalid attribute, bad
//	     extension name, ce-datacontenttype header, unreadable body
//	405  not POST (Allow: POST); OPTIONS answers 200 with Allow: POST
//	413  body over the limit
//	415  not a CloudEvent, unknown format, batch, specversion other than 1.0
//	500  exit status ≠ 0, trap, memory limit, stdout over its cap
//	503  overload or shutting down, with Retry-After
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
// Header values are not percent-decoded. The HTTP binding says a receiver
// MUST decode them, but sdk-go never encodes nor decodes (sdk-go#1331), and
// Knative's brokers, built on sdk-go, send values raw: decoding would
// corrupt any value with a literal '%' in it, which is far more common than
// a sender that encodes. The values reach CE_* exactly as sdk-go would hand
// them to a Go function.
//
// Binary mode, the default of sdk-go and Knative, is parsed by this package
// directly from the request's headers with sdk-go's rules (which header is
// which attribute, the first value wins, extension names are letters and
// digits, source a URI-reference, time RFC 3339, dataschema an absolute URI,
// datacontenttype an RFC 2046 media type): a fuzz test holds it to what
// binding.ToEvent and Validate accept. Going through binding.ToEvent costs
// about 6µs and 23 allocations per event, more than the rest of the front
// door, for an event whose attributes end up as strings anyway. Structured
// mode goes through sdk-go's event model (event.Event's JSON decoder) after
// encoding/json checked the document: sdk-go's decoder accepts some
// malformed JSON. One sdk-go v2.16.2 gap is bridged: a `data` JSON value
// with a `+json` datacontenttype (application/vnd.api+json), which the JSON
// format allows and sdk-go rejects.
//
// Only specversion 1.0 is accepted; 0.3 is answered 415. Knative and every
// current SDK send 1.0, and the CE_* contract is 1.0's attribute set.
//
// CE_TIME is normalised as sdk-go prints times: RFC 3339 in UTC. CE_SOURCE
// and CE_DATASCHEMA are the header values in binary mode and sdk-go's
// rendering of the parsed URI in structured mode (the same for any ordinary
// URI). JSON extension values that are not strings (numbers, booleans) are
// rendered as sdk-go's types.Format does.
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
// 503 at once, before its body is read. Requests count against the queue
// from admission, including while their body is read, so the memory held by
// bodies is bounded by (concurrency + queue length) × max body and no
// goroutines pile up behind the slots. The defaults follow Knative's
// queue-proxy: a queue of 10 × concurrency, waiting up to the invocation
// timeout. Retry-After is 1 second: slots free up in milliseconds.
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
// GET /healthz, /health/readiness and /health/liveness answer 200 as soon
// as the Server exists (readiness turns 503 once Shutdown began, liveness
// stays 200). Kubernetes and Knative probes (User-Agent kube-probe/…, a
// K-Network-Probe header) are answered like readiness on any path. None is
// an invocation.
package events
