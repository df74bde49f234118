package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nebula.dev/nebula/abi"
)

// StatusClientClosedRequest is the `code` label of an invocation abandoned
// because its client went away (nginx's convention): the guest was stopped
// and nobody read the response.
const StatusClientClosedRequest = 499

// RetryAfter is the Retry-After header of every 503, in seconds.
const RetryAfter = "1"

// Server is a function's CloudEvents front door: it receives events over
// HTTP, runs each in a fresh instance through an abi.Invoker and replies.
// Create it with New.
//
// Its parts: a connLimiter per listener (connections), bodyReader (request
// bodies within a deadline and a memory budget), the parsers of
// cloudevent.go and cgi.go, admission (slots and the queue), the invoker,
// then reply.go or the CGI reply; health.go answers probes.
type Server struct {
	inv    abi.Invoker
	m      *metrics
	p      parser
	sink   *sink
	adm    *admission
	bodies bodyReader

	function    string
	timeout     time.Duration
	maxConns    int
	protocol    Protocol
	replyType   string
	replySource string
	replyCT     string
	timeoutMsg  string

	replySourceHdr string // replySource, percent-encoded for ce-source

	active   atomic.Int64 // event requests inside the handler
	draining atomic.Bool

	bufs    sync.Pool // *[]byte
	jobs    sync.Pool // *job
	handler http.Handler

	base  context.Context // parent of every request's context under Serve
	abort context.CancelFunc
	srv   *http.Server
	msrv  *http.Server
}

// New returns a Server running events with inv, or an error naming the
// first invalid setting of cfg.
func New(inv abi.Invoker, cfg Config) (*Server, error) {
	if inv == nil {
		return nil, errors.New("events: nil invoker")
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rt := inv.Runtime()
	m, err := newMetrics(cfg.registerer, cfg.function, rt)
	if err != nil {
		return nil, fmt.Errorf("events: registering metrics: %w", err)
	}
	running := cfg.concurrency
	if rt == abi.RuntimeWasm {
		running = min(running, wasmRunningPerCPU*runtime.GOMAXPROCS(0))
	}
	s := &Server{
		inv: inv,
		m:   m,
		adm: newAdmission(running, cfg.concurrency-running+cfg.queueLen, cfg.queueWait, m.queued),
		bodies: bodyReader{
			max:     cfg.maxBody,
			budget:  bodyBudget(cfg.maxBody, cfg.concurrency+cfg.queueLen, cfg.bodyBudget),
			timeout: cfg.bodyTimeout,
		},
		function:    cfg.function,
		timeout:     cfg.timeout,
		maxConns:    cfg.maxConns,
		protocol:    cfg.protocol,
		replyType:   cfg.replyType,
		replySource: cfg.replySource,
		replyCT:     cfg.replyCT,
		timeoutMsg:  "function timed out after " + cfg.timeout.String(),
	}
	if s.replySource == "" {
		s.replySource = "/nebula/" + url.PathEscape(cfg.function)
	}
	s.replySourceHdr = encodeHeaderValue(s.replySource)
	if cfg.stderr != nil {
		s.sink = &sink{w: cfg.stderr}
	}
	s.jobs.New = func() any { return new(job) }
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.base, s.abort = context.WithCancel(context.Background())
	s.srv = s.newEventServer()
	s.msrv = newMetricsServer(m)
	return s, nil
}

// newEventServer is the HTTP server of the front door: HTTP/1 and h2c,
// with the header, idle and HTTP/2 limits of package events.
func (s *Server) newEventServer() *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	return &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: HeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		// HTTP/2 buffers what a client sends ahead of the handler's reads
		// in the process (HTTP/1 leaves it in the kernel): at most 256 KiB
		// a connection, instead of net/http's 1 MiB.
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          MaxStreams,
			MaxReceiveBufferPerConnection: 256 << 10,
			MaxReceiveBufferPerStream:     128 << 10,
			PingTimeout:                   HeaderTimeout,
		},
		ConnState:   trackConnState,
		BaseContext: func(net.Listener) context.Context { return s.base },
	}
}

// newMetricsServer is the HTTP server of the metrics endpoint.
func newMetricsServer(m *metrics) *http.Server {
	return &http.Server{
		Handler:           m.handler(),
		ReadHeaderTimeout: HeaderTimeout,
		ReadTimeout:       HeaderTimeout,
		WriteTimeout:      BodyTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ConnState:         trackConnState,
	}
}

// bodyBudget is the memory all request bodies in flight may hold: the
// configured budget, else max(maxBody, min(n × maxBody, maxBodyBudget)).
func bodyBudget(maxBody int64, n int, configured int64) int64 {
	if configured > 0 {
		return max(configured, maxBody+1)
	}
	b := int64(maxBodyBudget)
	if int64(n) <= b/maxBody {
		b = int64(n) * maxBody
	}
	return max(b, maxBody+1)
}

// Handler returns the front door as an http.Handler: events on every path
// but the health checks.
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler returns the handler of the metrics port: `GET /metrics`
// with the text, OpenMetrics and protobuf formats negotiable.
func (s *Server) MetricsHandler() http.Handler { return s.msrv.Handler }

// Serve accepts connections on ln, HTTP/1.1 and HTTP/2 with prior
// knowledge (h2c), until Shutdown or until ctx is done. It returns nil once
// stopped that way.
//
// # Notes
//
// ctx is a hard stop, like SIGKILL: when it is done in-flight invocations
// are aborted and connections closed at once. Stop gracefully with Shutdown.
// Serve may be called for several listeners; each gets its own cap of
// open connections (WithMaxConnections).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, s.srv, newConnLimiter(ln, s.maxConns, s.m.connsClosed("events")), s.stop)
}

// ServeMetrics serves MetricsHandler on ln, at most MetricsMaxConnections
// connections at once, until Shutdown or until ctx is done, and returns nil
// once stopped that way.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	return serve(ctx, s.msrv, newConnLimiter(ln, MetricsMaxConnections, s.m.connsClosed("metrics")),
		func() { _ = s.msrv.Close() })
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener, stop func()) error {
	defer context.AfterFunc(ctx, stop)()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// stop aborts in-flight invocations and closes every connection.
func (s *Server) stop() {
	s.draining.Store(true)
	s.abort()
	_ = s.srv.Close()
	_ = s.msrv.Close()
}

// Shutdown stops the Server gracefully: it stops accepting connections and
// events (readiness turns 503), lets in-flight invocations finish and
// returns, then closes the metrics server. If ctx is done first, it aborts
// what still runs and returns ctx's error.
//
// # Notes
//
// Knative sends SIGTERM, waits the grace period (at least the revision
// timeout) and sends SIGKILL: bound ctx by the grace period.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	err := s.srv.Shutdown(ctx)
	if err == nil {
		err = s.waitIdle(ctx) // requests served by Handler in another server
	}
	if err != nil {
		s.stop()
		return err
	}
	_ = s.msrv.Shutdown(ctx)
	s.abort()
	return nil
}

func (s *Server) waitIdle(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// ObserveCompile records the compilation of the function's module at task
// start in nebula_module_compile_seconds; cacheHit tells whether it came
// from the compilation cache.
func (s *Server) ObserveCompile(d time.Duration, cacheHit bool) {
	if cacheHit {
		s.m.compileHit.Observe(d.Seconds())
	} else {
		s.m.compileMiss.Observe(d.Seconds())
	}
}

// SetTaskReady records nebula_task_ready_seconds: the time from the shim's
// Create to the front door being ready.
func (s *Server) SetTaskReady(d time.Duration) { s.m.ready.Set(d.Seconds()) }

// call holds the phases of one request, for Server-Timing, and its trace.
type call struct {
	t0                 time.Time
	queue, start, exec time.Duration
	trace              traceContext
}

func (c *call) serverTiming() string {
	var buf [96]byte
	return string(c.appendServerTiming(buf[:0]))
}

// appendServerTiming appends the W3C Server-Timing value of c, in ms.
func (c *call) appendServerTiming(b []byte) []byte {
	b = append(b, TimingQueue+";dur="...)
	b = appendMillis(b, c.queue)
	b = append(b, ", "+TimingStart+";dur="...)
	b = appendMillis(b, c.start)
	b = append(b, ", "+TimingExec+";dur="...)
	b = appendMillis(b, c.exec)
	b = append(b, ", "+TimingTotal+";dur="...)
	return appendMillis(b, time.Since(c.t0))
}

var (
	allowPOST  = []string{"POST"}
	textPlain  = []string{"text/plain; charset=utf-8"}
	nosniff    = []string{"nosniff"}
	retryAfter = []string{RetryAfter}
	ceJSON     = []string{"application/cloudevents+json"}
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c := call{t0: time.Now()}
	if isHealthCheck(r) {
		s.health(w, r, &c)
		return
	}
	s.active.Add(1)
	code := s.event(w, r, &c)
	s.active.Add(-1)
	if code != 0 {
		s.m.count(code)
		s.m.observe(s.m.duration, time.Since(c.t0), &c.trace)
	}
}

// fail answers with a short text/plain error and returns code.
func (s *Server) fail(w http.ResponseWriter, c *call, code int, msg string) int {
	s.replyDeadline(w)
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	if code == http.StatusServiceUnavailable {
		h["Retry-After"] = retryAfter
	}
	s.setTrace(h, c)
	h["Server-Timing"] = []string{c.serverTiming()}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
	return code
}

// setTrace echoes the request's trace context in the response.
func (s *Server) setTrace(h http.Header, c *call) {
	if c.trace.parent != "" {
		h["Traceparent"] = []string{c.trace.parent}
		if c.trace.state != "" {
			h["Tracestate"] = []string{c.trace.state}
		}
	}
}

// mode of a request, beyond the CloudEvents modes of cloudevent.go.
const modePlain mode = 0

// event serves one request on the event path and returns the status it
// answered, or 0 for a request that is not an invocation (OPTIONS).
func (s *Server) event(w http.ResponseWriter, r *http.Request, c *call) int {
	md, code, answered := s.requestMode(w, r, c)
	if answered {
		return code
	}
	if r.ContentLength > s.bodies.max {
		return s.fail(w, c, http.StatusRequestEntityTooLarge, errTooLarge.Error())
	}

	bp := s.getBuf()
	defer s.bufs.Put(bp)
	body, reserved, err := s.bodies.read(w, r, bp)
	defer s.bodies.unreserve(reserved)
	if err != nil {
		return s.bodyError(w, c, err)
	}
	j := s.jobs.Get().(*job)
	defer s.putJob(j)
	if err := s.parseRequest(r, md, body, j, c); err != nil {
		return s.clientError(w, c, err)
	}
	if s.bodies.spent() { // by replies not yet taken
		return s.fail(w, c, http.StatusServiceUnavailable, errBodyBudget.Error())
	}
	resp, code := s.admitAndInvoke(w, r, c, &j.req)
	if code != 0 {
		return code
	}
	if resp != nil {
		defer s.bodies.unreserve(s.bodies.hold(len(resp.Stdout)))
	}
	return s.answer(w, md, &j.ev, j.req.ID, resp, c)
}

// requestMode checks the method (POST, or OPTIONS which it answers) and
// that the server is not draining, and tells how the request carries its
// event; answered is true when it has answered the request with code.
func (s *Server) requestMode(w http.ResponseWriter, r *http.Request, c *call) (md mode, code int, answered bool) {
	if s.protocol != ProtocolHTTP {
		switch r.Method {
		case http.MethodPost:
		case http.MethodOptions:
			s.options(w, r, c)
			return 0, 0, true
		default:
			w.Header()["Allow"] = allowPOST
			return 0, s.fail(w, c, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: POST CloudEvents"), true
		}
	}
	if s.draining.Load() {
		return 0, s.fail(w, c, http.StatusServiceUnavailable, "shutting down"), true
	}
	md = modePlain
	if s.protocol != ProtocolHTTP {
		var err error
		md, err = contentMode(r.Header)
		if err == errNotCloudEvent && s.protocol == ProtocolAuto {
			md, err = modePlain, nil
		}
		if err != nil {
			return 0, s.clientError(w, c, err), true
		}
	}
	return md, 0, false
}

// bodyError answers a body that could not be read.
func (s *Server) bodyError(w http.ResponseWriter, c *call, err error) int {
	switch err {
	case errTooLarge:
		return s.fail(w, c, http.StatusRequestEntityTooLarge, err.Error())
	case errBodyBudget:
		return s.fail(w, c, http.StatusServiceUnavailable, err.Error())
	case errBodySlow:
		w.Header()["Connection"] = []string{"close"}
		return s.fail(w, c, http.StatusRequestTimeout, err.Error()+" (within "+s.bodies.timeout.String()+")")
	}
	return s.fail(w, c, http.StatusBadRequest, "reading body: "+err.Error())
}

// parseRequest parses the event of a request in mode md into j.ev, and
// fills j.req and c's trace context from it (from the HTTP request itself
// in plain mode).
func (s *Server) parseRequest(r *http.Request, md mode, body []byte, j *job, c *call) error {
	ev := &j.ev
	ev.ext = ev.extBuf[:0]
	var err error
	switch md {
	case modeBinary:
		err = s.p.parseBinary(r.Header, body, ev)
	case modeStructured:
		err = s.p.parseStructured(body, ev)
	}
	if err != nil {
		return err
	}
	if md == modePlain {
		if strings.IndexByte(r.URL.Path, 0) >= 0 {
			return errPathNUL
		}
		c.trace = readTraceContext(r.Header, nil)
		j.req = abi.Request{ID: requestID(r), Stdin: body, Env: cgiEnv(r, len(body), c.trace)}
	} else {
		c.trace = readTraceContext(r.Header, ev)
		j.req = abi.Request{ID: ev.id, Stdin: ev.data, Env: ev.env(c.trace)}
	}
	return nil
}

// errPathNUL refuses a plain HTTP request whose path decodes to a NUL
// byte: PATH_INFO, a variable of the guest's environment, cannot hold one.
var errPathNUL = badRequest("request path contains a NUL byte (%00)")

// admitAndInvoke waits for a slot and runs req, recording its phases in c
// and the metrics. On failure it answers the request and returns the
// status (code != 0).
func (s *Server) admitAndInvoke(w http.ResponseWriter, r *http.Request, c *call, req *abi.Request) (resp *abi.Response, code int) {
	q, err := s.adm.acquire(r.Context())
	c.queue = q
	if err != nil {
		if err == errClientGone {
			return nil, s.fail(w, c, StatusClientClosedRequest, err.Error())
		}
		return nil, s.fail(w, c, http.StatusServiceUnavailable, err.Error())
	}
	resp, err = s.invoke(r.Context(), req)
	if resp != nil {
		c.start, c.exec = resp.Startup, resp.Execution
		if resp.Startup > 0 {
			s.m.observe(s.m.startup, resp.Startup, &c.trace)
		}
		if resp.Execution > 0 {
			s.m.observe(s.m.execution, resp.Execution, &c.trace)
		}
	}
	if err != nil {
		code, msg := s.invokeError(r.Context(), err)
		if s.sink != nil {
			s.sink.lines(req.ID, "nebula: "+msg)
		}
		return resp, s.fail(w, c, code, msg)
	}
	return resp, 0
}

// answer replies with the function's output: as plain HTTP, as a
// CloudEvent in mode md, or 202 Accepted when there is none.
func (s *Server) answer(w http.ResponseWriter, md mode, ev *inEvent, id string, resp *abi.Response, c *call) int {
	s.replyDeadline(w)
	var out []byte
	if resp != nil {
		out = resp.Stdout
	}
	if md == modePlain {
		return s.replyPlain(w, id, out, c)
	}
	if len(out) == 0 {
		h := w.Header()
		s.setTrace(h, c)
		h["Server-Timing"] = []string{c.serverTiming()}
		w.WriteHeader(http.StatusAccepted)
		return http.StatusAccepted
	}
	return s.reply(w, md, ev, out, c)
}

// replyDeadline gives the client the body timeout to take the reply about
// to be written, after which its connection (its stream, for HTTP/2) is
// closed: a reply nobody reads must not hold its bytes and its connection
// for good. net/http clears the deadline once the response is written.
func (s *Server) replyDeadline(w http.ResponseWriter) {
	if d, ok := w.(writeDeadliner); ok {
		_ = d.SetWriteDeadline(time.Now().Add(s.bodies.timeout))
	}
}

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// requestID names a plain HTTP invocation in logs: its X-Request-Id when
// it has a printable one, else a new UUID.
func requestID(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) > 0 && len(v[0]) <= 128 && v[0] != "" && checkString(v[0]) == nil {
		return v[0]
	}
	var b [36]byte
	encodeUUID(b[:], newUUID())
	return string(b[:])
}

func (s *Server) clientError(w http.ResponseWriter, c *call, err error) int {
	var es *errStatus
	if errors.As(err, &es) {
		return s.fail(w, c, es.code, es.msg)
	}
	return s.fail(w, c, http.StatusBadRequest, err.Error())
}

// options answers the CloudEvents Web Hook's validation handshake (§4.2)
// and Knative's optional OPTIONS probe: Allow: POST.
func (s *Server) options(w http.ResponseWriter, r *http.Request, c *call) {
	h := w.Header()
	h["Allow"] = allowPOST
	if o := r.Header.Get("WebHook-Request-Origin"); o != "" {
		h.Set("WebHook-Allowed-Origin", o)
		if r.Header.Get("WebHook-Request-Rate") != "" {
			h.Set("WebHook-Allowed-Rate", "*")
		}
	}
	h["Server-Timing"] = []string{c.serverTiming()}
	w.WriteHeader(http.StatusOK)
}

// invoke runs req in a slot already acquired, and gives the slot back.
func (s *Server) invoke(ctx context.Context, req *abi.Request) (resp *abi.Response, err error) {
	var lw *lineWriter
	if s.sink != nil {
		lw = s.sink.get(req.ID)
		req.Stderr = lw
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	s.m.inflight.Inc()
	defer func() { // even if the invoker panics: the slot must come back
		s.m.inflight.Dec()
		cancel()
		s.adm.release()
		if lw != nil {
			s.sink.put(lw)
		}
	}()
	resp, err = s.inv.Invoke(ctx, req)
	if err != nil && ctx.Err() == context.DeadlineExceeded && !errors.Is(err, abi.ErrTimeout) {
		// The deadline passed whatever the invoker says about it.
		err = fmt.Errorf("%w: %w", abi.ErrTimeout, err)
	}
	return resp, err
}

// invokeError maps an Invoker's error to a status and a message.
func (s *Server) invokeError(ctx context.Context, err error) (int, string) {
	var exit *abi.ExitError
	switch {
	case ctx.Err() != nil:
		return StatusClientClosedRequest, errClientGone.Error()
	case errors.Is(err, abi.ErrTimeout):
		return http.StatusGatewayTimeout, s.timeoutMsg
	case errors.As(err, &exit):
		return http.StatusInternalServerError, "function exited with status " + strconv.Itoa(exit.Code)
	default: // ErrTrap, ErrMemoryLimit, ErrOutputLimit, or the invoker failed
		return http.StatusInternalServerError, "function failed: " + err.Error()
	}
}

// job is the per-event state that outlives the stack (the invoker gets a
// pointer to its Request); recycled once the response is written.
type job struct {
	ev  inEvent
	req abi.Request
}

func (s *Server) putJob(j *job) {
	*j = job{}
	s.jobs.Put(j)
}

func (s *Server) getBuf() *[]byte {
	if bp, ok := s.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 4096)
	return &b
}
