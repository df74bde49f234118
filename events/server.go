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

	"github.com/google/uuid"

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
type Server struct {
	inv   abi.Invoker
	m     *metrics
	p     parser
	sink  *sink
	slots chan struct{}

	function    string
	timeout     time.Duration
	queueWait   time.Duration
	maxBody     int64
	admitMax    int64
	replyType   string
	replySource string
	replyCT     string
	timeoutMsg  string

	admitted atomic.Int64 // requests admitted: reading, queued or running
	active   atomic.Int64 // event requests inside the handler
	draining atomic.Bool

	bufs    sync.Pool // *[]byte
	jobs    sync.Pool // *job
	handler http.Handler

	base   context.Context // parent of every request's context under Serve
	abort  context.CancelFunc
	srv    *http.Server
	msrv   *http.Server
	closed sync.Once
}

// New returns a Server running events with inv, or an error naming the
// first invalid setting of cfg.
func New(inv abi.Invoker, cfg Config) (*Server, error) {
	if inv == nil {
		return nil, errors.New("events: nil invoker")
	}
	if cfg.function == "" {
		return nil, errors.New("events: function name required (WithFunction)")
	}
	if cfg.timeout < 0 {
		return nil, fmt.Errorf("events: invalid timeout %v", cfg.timeout)
	}
	if cfg.concurrency < 0 {
		return nil, fmt.Errorf("events: invalid concurrency %d", cfg.concurrency)
	}
	if cfg.maxBody < 0 {
		return nil, fmt.Errorf("events: invalid max body %d", cfg.maxBody)
	}
	if cfg.replySource != "" {
		if _, err := url.Parse(cfg.replySource); err != nil {
			return nil, fmt.Errorf("events: invalid reply source %q: not a URI-reference", cfg.replySource)
		}
	}
	if cfg.replyCT != "" && !validMediaType(cfg.replyCT) {
		return nil, fmt.Errorf("events: invalid reply content type %q", cfg.replyCT)
	}
	if cfg.timeout == 0 {
		cfg.timeout = DefaultTimeout
	}
	if cfg.concurrency == 0 {
		cfg.concurrency = runtime.GOMAXPROCS(0)
	}
	if cfg.maxBody == 0 {
		cfg.maxBody = DefaultMaxBody
	}
	if !cfg.queueLenSet {
		cfg.queueLen = DefaultQueueMult * cfg.concurrency
	}
	if !cfg.queueWaitSet {
		cfg.queueWait = cfg.timeout
	}
	rt := inv.Runtime()
	m, err := newMetrics(cfg.registerer, cfg.function, rt)
	if err != nil {
		return nil, fmt.Errorf("events: registering metrics: %w", err)
	}
	s := &Server{
		inv:         inv,
		m:           m,
		slots:       make(chan struct{}, cfg.concurrency),
		function:    cfg.function,
		timeout:     cfg.timeout,
		queueWait:   cfg.queueWait,
		maxBody:     cfg.maxBody,
		admitMax:    int64(cfg.concurrency + cfg.queueLen),
		replyType:   cfg.replyType,
		replySource: cfg.replySource,
		replyCT:     cfg.replyCT,
		timeoutMsg:  "function timed out after " + cfg.timeout.String(),
	}
	if s.replySource == "" {
		s.replySource = "/nebula/" + url.PathEscape(cfg.function)
	}
	if cfg.stderr != nil {
		s.sink = &sink{w: cfg.stderr}
	}
	s.jobs.New = func() any { return new(job) }
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.base, s.abort = context.WithCancel(context.Background())
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	s.srv = &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.base },
	}
	s.msrv = &http.Server{
		Handler:           m.handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s, nil
}

// Handler returns the front door as an http.Handler: events on every path
// but the health paths.
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
// Serve may be called for several listeners.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return serve(ctx, s.srv, ln, s.stop)
}

// ServeMetrics serves MetricsHandler on ln until Shutdown or until ctx is
// done, and returns nil once stopped that way.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	return serve(ctx, s.msrv, ln, func() { _ = s.msrv.Close() })
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

// call holds the phases of one request, for Server-Timing.
type call struct {
	t0                 time.Time
	queue, start, exec time.Duration
}

func (c *call) serverTiming() string {
	var buf [96]byte
	return string(c.appendServerTiming(buf[:0]))
}

// appendServerTiming appends the W3C Server-Timing value of c, in ms.
func (c *call) appendServerTiming(b []byte) []byte {
	b = append(b, "queue;dur="...)
	b = appendMillis(b, c.queue)
	b = append(b, ", start;dur="...)
	b = appendMillis(b, c.start)
	b = append(b, ", exec;dur="...)
	b = appendMillis(b, c.exec)
	b = append(b, ", total;dur="...)
	return appendMillis(b, time.Since(c.t0))
}

var (
	allowPOST    = []string{"POST"}
	allowGET     = []string{"GET, HEAD"}
	textPlain    = []string{"text/plain; charset=utf-8"}
	nosniff      = []string{"nosniff"}
	retryAfter   = []string{RetryAfter}
	ceJSON       = []string{"application/cloudevents+json"}
	okBody       = []byte("ok\n")
	drainingBody = []byte("shutting down\n")
)

func isHealthPath(p string) bool {
	return p == "/healthz" || p == "/health/readiness" || p == "/health/liveness"
}

// isProbe tells Kubernetes' and Knative's probes (knative.dev/networking's
// header.IsProbe): they are answered like readiness and not counted.
func isProbe(r *http.Request) bool {
	if ua := r.Header["User-Agent"]; len(ua) > 0 && strings.HasPrefix(ua[0], "kube-probe/") {
		return true
	}
	kp := r.Header["K-Network-Probe"]
	return len(kp) > 0 && kp[0] != ""
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c := call{t0: time.Now()}
	if isHealthPath(r.URL.Path) || isProbe(r) {
		s.health(w, r, &c)
		return
	}
	s.active.Add(1)
	code := s.event(w, r, &c)
	s.active.Add(-1)
	if code != 0 {
		s.m.count(code)
		s.m.duration.Observe(time.Since(c.t0).Seconds())
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request, c *call) {
	h := w.Header()
	h["Server-Timing"] = []string{c.serverTiming()}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !isProbe(r) {
		h["Allow"] = allowGET
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	h["Content-Type"] = textPlain
	body, code := okBody, http.StatusOK
	if s.draining.Load() && r.URL.Path != "/health/liveness" {
		body, code = drainingBody, http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// fail answers with a short text/plain error and returns code.
func (s *Server) fail(w http.ResponseWriter, c *call, code int, msg string) int {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = nosniff
	if code == http.StatusServiceUnavailable {
		h["Retry-After"] = retryAfter
	}
	h["Server-Timing"] = []string{c.serverTiming()}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
	return code
}

var (
	errOverload   = errors.New("overloaded: all slots busy and the queue full")
	errQueueWait  = errors.New("overloaded: waited too long for a slot")
	errClientGone = errors.New("client went away")
	errTooLarge   = errors.New("request body too large")
)

// event serves one event and returns the status it answered, or 0 for a
// request that is not an invocation (OPTIONS).
func (s *Server) event(w http.ResponseWriter, r *http.Request, c *call) int {
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		s.options(w, r, c)
		return 0
	default:
		w.Header()["Allow"] = allowPOST
		return s.fail(w, c, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: POST CloudEvents")
	}
	if s.draining.Load() {
		return s.fail(w, c, http.StatusServiceUnavailable, "shutting down")
	}
	md, err := classify(r.Header)
	if err != nil {
		return s.clientError(w, c, err)
	}
	if r.ContentLength > s.maxBody {
		return s.fail(w, c, http.StatusRequestEntityTooLarge, errTooLarge.Error())
	}
	if s.admitted.Add(1) > s.admitMax {
		s.admitted.Add(-1)
		return s.fail(w, c, http.StatusServiceUnavailable, errOverload.Error())
	}
	defer s.admitted.Add(-1)

	bp := s.getBuf()
	defer s.bufs.Put(bp)
	body, err := readBody(r.Body, bp, s.maxBody, r.ContentLength)
	if err != nil {
		if err == errTooLarge {
			return s.fail(w, c, http.StatusRequestEntityTooLarge, err.Error())
		}
		return s.fail(w, c, http.StatusBadRequest, "reading body: "+err.Error())
	}
	j := s.jobs.Get().(*job)
	defer s.putJob(j)
	ev := &j.ev
	ev.ext = ev.extBuf[:0]
	if md == modeBinary {
		err = s.p.parseBinary(r.Header, body, ev)
	} else {
		err = s.p.parseStructured(body, ev)
	}
	if err != nil {
		return s.clientError(w, c, err)
	}

	if err := s.acquire(r.Context(), c); err != nil {
		if err == errClientGone {
			return s.fail(w, c, StatusClientClosedRequest, err.Error())
		}
		return s.fail(w, c, http.StatusServiceUnavailable, err.Error())
	}
	resp, err := s.invoke(r.Context(), j)
	if resp != nil {
		c.start, c.exec = resp.Startup, resp.Execution
		if resp.Startup > 0 {
			s.m.startup.Observe(resp.Startup.Seconds())
		}
		if resp.Execution > 0 {
			s.m.execution.Observe(resp.Execution.Seconds())
		}
	}
	if err != nil {
		code, msg := s.invokeError(r.Context(), err)
		if s.sink != nil {
			s.sink.write([]byte("[" + ev.id + "] nebula: " + msg + "\n"))
		}
		return s.fail(w, c, code, msg)
	}
	if resp == nil || len(resp.Stdout) == 0 {
		w.Header()["Server-Timing"] = []string{c.serverTiming()}
		w.WriteHeader(http.StatusAccepted)
		return http.StatusAccepted
	}
	return s.reply(w, md, ev, resp.Stdout, c)
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

// acquire takes a slot, waiting in FIFO order (a channel's blocked senders
// are served first come, first served) for at most the queue wait.
func (s *Server) acquire(ctx context.Context, c *call) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.Now()
	s.m.queued.Inc()
	timer := time.NewTimer(s.queueWait)
	var err error
	select {
	case s.slots <- struct{}{}:
	case <-timer.C:
		err = errQueueWait
	case <-ctx.Done():
		err = errClientGone
	}
	timer.Stop()
	s.m.queued.Dec()
	c.queue = time.Since(t)
	return err
}

func (s *Server) invoke(ctx context.Context, j *job) (resp *abi.Response, err error) {
	ev, req := &j.ev, &j.req
	*req = abi.Request{ID: ev.id, Stdin: ev.data, Env: ev.env()}
	var lw *lineWriter
	if s.sink != nil {
		lw = s.sink.get(ev.id)
		req.Stderr = lw
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	s.m.inflight.Inc()
	defer func() { // even if the invoker panics: the slot must come back
		s.m.inflight.Dec()
		cancel()
		<-s.slots
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

// reply answers 200 with a reply event in the request's mode.
func (s *Server) reply(w http.ResponseWriter, md mode, ev *inEvent, out []byte, c *call) int {
	ct := s.replyCT
	if ct == "" {
		ct = detectContentType(out)
	}
	typ := s.replyType
	if typ == "" {
		typ = ev.typ + ".reply"
	}
	id := uuid.New()
	var idBuf [36]byte
	encodeUUID(idBuf[:], id)
	now := time.Now()
	h := w.Header()
	if md == modeStructured {
		bp := s.getBuf()
		defer s.bufs.Put(bp)
		b := appendStructured((*bp)[:0], unsafe36(&idBuf), s.replySource, typ, now, ct, out)
		*bp = b
		vals := make([]string, 3)
		vals[0], vals[1], vals[2] = ceJSON[0], strconv.Itoa(len(b)), c.serverTiming()
		h["Content-Type"] = vals[0:1:1]
		h["Content-Length"] = vals[1:2:2]
		h["Server-Timing"] = vals[2:3:3]
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return http.StatusOK
	}
	// One allocation holds every generated value.
	var sb [256]byte
	b := append(sb[:0], idBuf[:]...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	timeEnd := len(b)
	b = strconv.AppendInt(b, int64(len(out)), 10)
	lenEnd := len(b)
	b = c.appendServerTiming(b)
	all := string(b)
	vals := make([]string, 8)
	vals[0] = specVersion
	vals[1] = all[:36]
	vals[2] = s.replySource
	vals[3] = typ
	vals[4] = all[36:timeEnd]
	vals[5] = ct
	vals[6] = all[timeEnd:lenEnd]
	vals[7] = all[lenEnd:]
	h["Ce-Specversion"] = vals[0:1:1]
	h["Ce-Id"] = vals[1:2:2]
	h["Ce-Source"] = vals[2:3:3]
	h["Ce-Type"] = vals[3:4:4]
	h["Ce-Time"] = vals[4:5:5]
	h["Content-Type"] = vals[5:6:6]
	h["Content-Length"] = vals[6:7:7]
	h["Server-Timing"] = vals[7:8:8]
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return http.StatusOK
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

// readBody reads at most max bytes of body into *bp, growing it to the
// announced length first.
func readBody(body io.Reader, bp *[]byte, max, length int64) ([]byte, error) {
	b := (*bp)[:0]
	if length > int64(cap(b)) {
		b = make([]byte, 0, length+1) // +1: see EOF without growing
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			return nil, errTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(b) <= 1<<20 { // keep small buffers only
		*bp = b
	}
	return b, nil
}

// encodeUUID writes u's canonical form to dst without allocating.
func encodeUUID(dst []byte, u uuid.UUID) {
	const x = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = x[c>>4], x[c&0xf]
		j += 2
	}
}

func unsafe36(b *[36]byte) string { return unsafeString(b[:]) }
