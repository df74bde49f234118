package events_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// fake is an in-test Invoker. By default it echoes stdin; the event's type
// picks other behaviours (see invoke).
type fake struct {
	mu   sync.Mutex
	reqs []abi.Request
	// block, when set, makes "block" events wait for it to close.
	block chan struct{}
	// started receives once per "block" event that is running.
	started chan struct{}
}

func (f *fake) Runtime() string { return abi.RuntimeWasm }

func (f *fake) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, abi.Request{ID: req.ID, Stdin: bytes.Clone(req.Stdin), Env: slices.Clone(req.Env)})
	f.mu.Unlock()
	resp := &abi.Response{Startup: 20 * time.Microsecond, Execution: 30 * time.Microsecond}
	var typ string
	for _, kv := range req.Env {
		if v, ok := strings.CutPrefix(kv, "CE_TYPE="); ok {
			typ = v
		}
	}
	switch typ {
	case "exit3":
		return resp, &abi.ExitError{Code: 3}
	case "trap":
		return resp, fmt.Errorf("%w: unreachable", abi.ErrTrap)
	case "oom":
		return resp, abi.ErrMemoryLimit
	case "flood":
		return resp, abi.ErrOutputLimit
	case "sleep":
		<-ctx.Done()
		return resp, fmt.Errorf("%w: %w", abi.ErrTimeout, ctx.Err())
	case "silent":
		return resp, nil
	case "stderr":
		if req.Stderr != nil {
			fmt.Fprintf(req.Stderr, "first line\nsecond ")
			fmt.Fprintf(req.Stderr, "line\nunterminated")
		}
		return resp, nil
	case "block":
		if f.started != nil {
			f.started <- struct{}{}
		}
		select {
		case <-f.block:
			resp.Stdout = []byte("done")
			return resp, nil
		case <-ctx.Done():
			return resp, fmt.Errorf("%w: %w", abi.ErrTimeout, ctx.Err())
		}
	case "text":
		resp.Stdout = []byte("hello, world\n")
		return resp, nil
	case "bytes":
		resp.Stdout = []byte{0xff, 0x00, 0xfe}
		return resp, nil
	}
	resp.Stdout = bytes.Clone(req.Stdin)
	return resp, nil
}

func (f *fake) last(t *testing.T) abi.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("the invoker was not called")
	}
	return f.reqs[len(f.reqs)-1]
}

func (f *fake) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

type harness struct {
	t   *testing.T
	f   *fake
	srv *events.Server
	reg *prometheus.Registry
	h   http.Handler
}

func newHarness(t *testing.T, cfg events.Config) *harness {
	t.Helper()
	f := &fake{}
	reg := prometheus.NewRegistry()
	srv, err := events.New(f, cfg.WithFunction("fn").WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, f: f, srv: srv, reg: reg, h: srv.Handler()}
}

func (h *harness) do(r *http.Request) *http.Response {
	h.t.Helper()
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, r)
	resp := rec.Result()
	checkServerTiming(h.t, resp)
	return resp
}

var serverTiming = regexp.MustCompile(`^queue;dur=\d+\.\d{3}, start;dur=\d+\.\d{3}, exec;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}$`)

func checkServerTiming(t *testing.T, resp *http.Response) {
	t.Helper()
	if st := resp.Header.Get("Server-Timing"); !serverTiming.MatchString(st) {
		t.Errorf("%d response: Server-Timing %q", resp.StatusCode, st)
	}
}

func binaryReq(typ, contentType, body string, extra ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Ce-Specversion", "1.0")
	r.Header.Set("Ce-Id", "evt-1")
	r.Header.Set("Ce-Source", "/test/source")
	r.Header.Set("Ce-Type", typ)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for i := 0; i < len(extra); i += 2 {
		r.Header.Set(extra[i], extra[i+1])
	}
	return r
}

func structuredReq(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	return r
}

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// parseReply reads a reply the way a Knative broker does, with sdk-go.
func parseReply(t *testing.T, resp *http.Response) (*event.Event, binding.Encoding) {
	t.Helper()
	readBody(t, resp)
	msg := cehttp.NewMessageFromHttpResponse(resp)
	enc := msg.ReadEncoding()
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		t.Fatalf("reply is not a CloudEvent: %v", err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("reply is not a valid CloudEvent: %v", err)
	}
	return e, enc
}

func checkReplyAttrs(t *testing.T, e *event.Event, reqID, wantType, wantSource, wantCT string) {
	t.Helper()
	if e.SpecVersion() != "1.0" {
		t.Errorf("specversion %q", e.SpecVersion())
	}
	if e.ID() == reqID || uuid.Validate(e.ID()) != nil {
		t.Errorf("reply id %q: want a new UUID", e.ID())
	}
	if e.Type() != wantType {
		t.Errorf("type %q, want %q", e.Type(), wantType)
	}
	if e.Source() != wantSource {
		t.Errorf("source %q, want %q", e.Source(), wantSource)
	}
	if e.DataContentType() != wantCT {
		t.Errorf("datacontenttype %q, want %q", e.DataContentType(), wantCT)
	}
	if d := time.Since(e.Time()); d < 0 || d > time.Minute {
		t.Errorf("time %v", e.Time())
	}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestBinaryReply(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	resp := h.do(binaryReq("com.example.ping", "application/json", `{"n": 1}`,
		"Ce-Subject", "sub/1",
		"Ce-Time", "2024-05-06T07:08:09.5+02:00",
		"Ce-Dataschema", "https://example.com/schema.json",
		"Ce-Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"Ce-Myext", "a%20b"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	e, enc := parseReply(t, resp)
	if enc != binding.EncodingBinary {
		t.Fatalf("reply encoding %v, want binary like the request", enc)
	}
	checkReplyAttrs(t, e, "evt-1", "com.example.ping.reply", "/nebula/fn", "application/json")
	if string(e.Data()) != `{"n": 1}` {
		t.Errorf("data %q", e.Data())
	}

	req := h.f.last(t)
	if req.ID != "evt-1" || string(req.Stdin) != `{"n": 1}` {
		t.Errorf("request id %q stdin %q", req.ID, req.Stdin)
	}
	want := map[string]string{
		"CE_SPECVERSION":     "1.0",
		"CE_ID":              "evt-1",
		"CE_SOURCE":          "/test/source",
		"CE_TYPE":            "com.example.ping",
		"CE_SUBJECT":         "sub/1",
		"CE_TIME":            "2024-05-06T05:08:09.5Z",
		"CE_DATASCHEMA":      "https://example.com/schema.json",
		"CE_DATACONTENTTYPE": "application/json",
		"CE_TRACEPARENT":     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"CE_MYEXT":           "a b", // percent-decoded (HTTP binding §3.1.3.2), which sdk-go does not do
		// The distributed-tracing extension's traceparent, for want of a
		// traceparent header.
		"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	if got := envMap(req.Env); !maps.Equal(got, want) || len(req.Env) != len(want) {
		t.Errorf("env\n%q\nwant\n%q", req.Env, want)
	}
}

func TestBinaryMinimalEnv(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	resp := h.do(binaryReq("silent", "", ""))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := map[string]string{"CE_SPECVERSION": "1.0", "CE_ID": "evt-1", "CE_SOURCE": "/test/source", "CE_TYPE": "silent"}
	if got := envMap(h.f.last(t).Env); !maps.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	if len(h.f.last(t).Stdin) != 0 {
		t.Errorf("stdin %q, want empty", h.f.last(t).Stdin)
	}
}

func TestEmptyStdoutIs202(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	for _, r := range []*http.Request{
		binaryReq("silent", "text/plain", "x"),
		structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"silent"}`),
	} {
		resp := h.do(r)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d, want 202", resp.StatusCode)
		}
		if b := readBody(t, resp); len(b) != 0 || resp.Header.Get("Ce-Id") != "" {
			t.Fatalf("202 with a body %q or a reply event", b)
		}
	}
}

func TestStructuredJSONData(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	data := `{"b": [1, 2, {"c": "é\u00e9"}], "a": null}`
	resp := h.do(structuredReq(`{"specversion":"1.0","id":"s-1","source":"urn:test","type":"com.example.s",
		"subject":"subj","time":"2024-01-02T03:04:05Z","dataschema":"https://example.com/s",
		"datacontenttype":"application/json","traceparent":"00-x-y-01","count":7,"flag":true,
		"data":` + data + `}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
		t.Fatalf("reply Content-Type %q, want structured", ct)
	}
	e, enc := parseReply(t, resp)
	if enc != binding.EncodingStructured {
		t.Fatalf("reply encoding %v, want structured like the request", enc)
	}
	checkReplyAttrs(t, e, "s-1", "com.example.s.reply", "/nebula/fn", "application/json")
	req := h.f.last(t)
	if string(req.Stdin) != data {
		t.Errorf("stdin %q, want the JSON text %q", req.Stdin, data)
	}
	if string(e.Data()) != data {
		t.Errorf("reply data %q", e.Data())
	}
	want := map[string]string{
		"CE_SPECVERSION": "1.0", "CE_ID": "s-1", "CE_SOURCE": "urn:test", "CE_TYPE": "com.example.s",
		"CE_SUBJECT": "subj", "CE_TIME": "2024-01-02T03:04:05Z", "CE_DATASCHEMA": "https://example.com/s",
		"CE_DATACONTENTTYPE": "application/json", "CE_TRACEPARENT": "00-x-y-01", "CE_COUNT": "7", "CE_FLAG": "true",
	}
	if got := envMap(req.Env); !maps.Equal(got, want) {
		t.Errorf("env\n%q\nwant\n%q", got, want)
	}
}

func TestStructuredJSONSuffixData(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	data := `{"data": {"type": "articles"}, "n": [1, 2.5]}`
	resp := h.do(structuredReq(`{"specversion":"1.0","id":"j-1","source":"/s","type":"t",
		"datacontenttype":"application/vnd.api+json","data":` + data + `}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	req := h.f.last(t)
	if string(req.Stdin) != data {
		t.Fatalf("stdin %q, want %q", req.Stdin, data)
	}
	if got := envMap(req.Env)["CE_DATACONTENTTYPE"]; got != "application/vnd.api+json" {
		t.Fatalf("CE_DATACONTENTTYPE %q", got)
	}
	e, _ := parseReply(t, resp)
	if string(e.Data()) != data {
		t.Errorf("reply data %q", e.Data())
	}
}

func TestStructuredBase64Data(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	raw := []byte{0, 1, 2, 0xff, 0xfe, '\n', 'x'}
	resp := h.do(structuredReq(`{"specversion":"1.0","id":"b-1","source":"/s","type":"t",
		"datacontenttype":"application/octet-stream","data_base64":"` + base64.StdEncoding.EncodeToString(raw) + `"}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	if got := h.f.last(t).Stdin; !bytes.Equal(got, raw) {
		t.Fatalf("stdin %v, want %v", got, raw)
	}
	body := readBody(t, resp)
	if !bytes.Contains(body, []byte(`"data_base64":"`)) {
		t.Errorf("non-UTF-8 reply not in data_base64: %s", body)
	}
	e, _ := parseReply(t, resp)
	checkReplyAttrs(t, e, "b-1", "t.reply", "/nebula/fn", "application/octet-stream")
	if !bytes.Equal(e.Data(), raw) {
		t.Errorf("reply data %v, want %v", e.Data(), raw)
	}
}

func TestStructuredTextData(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	resp := h.do(structuredReq(`{"specversion":"1.0","id":"t-1","source":"/s","type":"t",
		"datacontenttype":"text/plain","data":"say \"hi\"\n€"}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
	}
	if got := string(h.f.last(t).Stdin); got != "say \"hi\"\n€" {
		t.Fatalf("stdin %q", got)
	}
	e, _ := parseReply(t, resp)
	checkReplyAttrs(t, e, "t-1", "t.reply", "/nebula/fn", "text/plain; charset=utf-8")
	if string(e.Data()) != "say \"hi\"\n€" {
		t.Errorf("reply data %q", e.Data())
	}
}

func TestDetectedContentType(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	for typ, want := range map[string]struct{ ct, data string }{
		"text":  {"text/plain; charset=utf-8", "hello, world\n"},
		"bytes": {"application/octet-stream", "\xff\x00\xfe"},
	} {
		for _, r := range []*http.Request{
			binaryReq(typ, "", ""),
			structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"` + typ + `"}`),
		} {
			resp := h.do(r)
			e, _ := parseReply(t, resp)
			if e.DataContentType() != want.ct || string(e.Data()) != want.data {
				t.Errorf("%s: datacontenttype %q data %q, want %q %q", typ, e.DataContentType(), e.Data(), want.ct, want.data)
			}
		}
	}
}

func TestConfiguredReply(t *testing.T) {
	h := newHarness(t, events.NewConfig().
		WithReplyType("com.example.done").
		WithReplySource("https://fn.example.com/").
		WithReplyContentType("application/vnd.example+json"))
	for _, r := range []*http.Request{
		binaryReq("x", "application/json", `{"a":1}`),
		structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"x","data":{"a":1}}`),
	} {
		resp := h.do(r)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, readBody(t, resp))
		}
		e, _ := parseReply(t, resp)
		checkReplyAttrs(t, e, "1", "com.example.done", "https://fn.example.com/", "application/vnd.example+json")
		if string(e.Data()) != `{"a":1}` {
			t.Errorf("data %q", e.Data())
		}
	}
}

func TestStatusCodes(t *testing.T) {
	h := newHarness(t, events.NewConfig().WithTimeout(50*time.Millisecond).WithMaxBody(256))
	big := strings.Repeat("x", 257)
	chunked := binaryReq("t", "text/plain", "")
	chunked.Body = io.NopCloser(strings.NewReader(big))
	chunked.ContentLength = -1
	get := httptest.NewRequest(http.MethodGet, "/", nil)
	put := binaryReq("t", "", "")
	put.Method = http.MethodPut
	for _, tc := range []struct {
		name string
		r    *http.Request
		code int
	}{
		{"ok", binaryReq("t", "text/plain", "hi"), 200},
		{"empty stdout", binaryReq("silent", "", ""), 202},
		{"missing id", binaryReq("t", "", "", "Ce-Id", ""), 400},
		{"bad extension name", binaryReq("t", "", "", "Ce-Bad_Name", "v"), 400},
		{"ce-datacontenttype", binaryReq("t", "", "", "Ce-Datacontenttype", "text/plain"), 400},
		{"bad time", binaryReq("t", "", "", "Ce-Time", "noon"), 400},
		{"malformed JSON", structuredReq(`{"specversion":"1.0","id":"1",`), 400},
		{"trailing garbage", structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"t"} x`), 400},
		{"structured missing type", structuredReq(`{"specversion":"1.0","id":"1","source":"/s"}`), 400},
		{"structured no specversion", structuredReq(`{"id":"1","source":"/s","type":"t"}`), 400},
		{"structured bad extension", structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"t","bad-name":1}`), 400},
		{"structured not an object", structuredReq(`[1,2]`), 400},
		{"structured text data not a string", structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{}}`), 400},
		{"plain JSON", func() *http.Request { // a plain HTTP invocation, echoed
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}(), 200},
		{"batch", func() *http.Request {
			r := structuredReq(`[]`)
			r.Header.Set("Content-Type", "application/cloudevents-batch+json")
			return r
		}(), 415},
		{"unknown format", func() *http.Request {
			r := structuredReq(`x`)
			r.Header.Set("Content-Type", "application/cloudevents+avro")
			return r
		}(), 415},
		{"specversion 0.3", binaryReq("t", "", "", "Ce-Specversion", "0.3"), 415},
		{"structured specversion 2.0", structuredReq(`{"specversion":"2.0","id":"1","source":"/s","type":"t"}`), 415},
		{"GET", get, 405},
		{"PUT", put, 405},
		{"body over max", binaryReq("t", "text/plain", big), 413},
		{"chunked body over max", chunked, 413},
		{"exit 3", binaryReq("exit3", "", ""), 500},
		{"trap", binaryReq("trap", "", ""), 500},
		{"memory limit", binaryReq("oom", "", ""), 500},
		{"output limit", binaryReq("flood", "", ""), 500},
		{"timeout", binaryReq("sleep", "", ""), 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(tc.r)
			body := readBody(t, resp)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.code, body)
			}
			if tc.code == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("405 with Allow %q", resp.Header.Get("Allow"))
			}
			if tc.code >= 400 && (len(body) == 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain")) {
				t.Errorf("error without a text message: %q %q", resp.Header.Get("Content-Type"), body)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	r := httptest.NewRequest(http.MethodOptions, "/", nil)
	r.Header.Set("WebHook-Request-Origin", "eventemitter.example.com")
	resp := h.do(r)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Allow") != "POST" ||
		resp.Header.Get("WebHook-Allowed-Origin") != "eventemitter.example.com" {
		t.Fatalf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestStderrPrefixed(t *testing.T) {
	var mu sync.Mutex
	var log bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if !bytes.HasSuffix(p, []byte("\n")) {
			t.Errorf("sink got a partial line %q", p)
		}
		return log.Write(p)
	})
	h := newHarness(t, events.NewConfig().WithStderr(w))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			h.do(binaryReq("stderr", "", "", "Ce-Id", fmt.Sprint("id-", i)))
		})
	}
	wg.Wait()
	h.do(binaryReq("exit3", "", "", "Ce-Id", "failing"))
	lines := strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n")
	count := map[string]int{}
	for _, l := range lines {
		m := regexp.MustCompile(`^\[(id-\d)\] (first line|second line|unterminated)$`).FindStringSubmatch(l)
		if m == nil {
			if l == "[failing] nebula: function exited with status 3" {
				continue
			}
			t.Errorf("unexpected line %q", l)
			continue
		}
		count[m[1]]++
	}
	for i := range 8 {
		if c := count[fmt.Sprint("id-", i)]; c != 3 {
			t.Errorf("id-%d: %d lines, want 3", i, c)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestOverload(t *testing.T) {
	h := newHarness(t, events.NewConfig().WithConcurrency(1).WithQueue(1, time.Minute))
	h.f.block = make(chan struct{})
	h.f.started = make(chan struct{}, 1)
	codes := make(chan int, 3)
	send := func() {
		resp := h.do(binaryReq("block", "", ""))
		codes <- resp.StatusCode
	}
	go send()
	<-h.f.started // the first runs
	go send()     // the second waits in the queue
	waitFor(t, func() bool { return gauge(t, h.reg, "nebula_queue_depth") == 1 })
	resp := h.do(binaryReq("block", "", ""))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(h.f.block)
	<-h.f.started
	for range 2 {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("queued request: %d", c)
		}
	}
}

func TestQueueWait(t *testing.T) {
	h := newHarness(t, events.NewConfig().WithConcurrency(1).WithQueue(5, 30*time.Millisecond))
	h.f.block = make(chan struct{})
	h.f.started = make(chan struct{}, 1)
	done := make(chan int)
	go func() { done <- h.do(binaryReq("block", "", "")).StatusCode }()
	<-h.f.started
	start := time.Now()
	resp := h.do(binaryReq("t", "", ""))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, want 503 with Retry-After", resp.StatusCode)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("gave up after %v, before the queue wait", d)
	}
	close(h.f.block)
	if c := <-done; c != 200 {
		t.Fatalf("first request %d", c)
	}
}

func TestHealthAndProbes(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	probe := httptest.NewRequest(http.MethodGet, "/", nil)
	probe.Header.Set("User-Agent", "kube-probe/1.31")
	knProbe := httptest.NewRequest(http.MethodGet, "/", nil)
	knProbe.Header.Set("K-Network-Probe", "probe")
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/healthz", nil),
		httptest.NewRequest(http.MethodGet, "/health/readiness", nil),
		httptest.NewRequest(http.MethodGet, "/health/liveness", nil),
		httptest.NewRequest(http.MethodHead, "/healthz", nil),
		probe, knProbe,
	} {
		if resp := h.do(r); resp.StatusCode != http.StatusOK {
			t.Errorf("%s %s: %d", r.Method, r.URL.Path, resp.StatusCode)
		}
	}
	if n := h.f.calls(); n != 0 {
		t.Errorf("probes invoked the function %d times", n)
	}
	fams := scrape(t, h.srv.MetricsHandler())
	if total := sumCounter(fams["nebula_invocations_total"]); total != 0 {
		t.Errorf("probes counted as %v invocations", total)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]events.Config{
		"no function":      events.NewConfig(),
		"bad content type": events.NewConfig().WithFunction("f").WithReplyContentType("text/"),
		"bad source":       events.NewConfig().WithFunction("f").WithReplySource("http://a b:x/"),
		"negative timeout": events.NewConfig().WithFunction("f").WithTimeout(-time.Second),
		"type with NUL":    events.NewConfig().WithFunction("f").WithReplyType("a\x00b"),
		"source not UTF-8": events.NewConfig().WithFunction("f").WithReplySource("/s\xff"),
		"content type NUL": events.NewConfig().WithFunction("f").WithReplyContentType("text/plain; a=\"\x00\""),
	} {
		if _, err := events.New(&fake{}, cfg.WithRegisterer(prometheus.NewRegistry())); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 5s")
}
