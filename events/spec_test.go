package events_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// The CloudEvents v1.0.2 rules the front door keeps where sdk-go v2.16.2
// does not. Each case cites the section of the specification.

// HTTP binding §3.1.3.2: "any HTTP header value MUST first be unescaped
// with respect to double-quoted strings ... A single round of
// percent-decoding MUST then be performed"; "encoded byte sequences which
// are invalid in UTF-8 MUST be rejected"; "decoding MUST accept lower-case
// values"; "values that have been unnecessarily percent-encoded MUST be
// accepted".
func TestBindingHeaderValuesDecoded(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	for _, tc := range []struct {
		header, value, env string // env "" means: rejected with 400
	}{
		{"Ce-Subject", "caf%C3%A9", "CE_SUBJECT=café"},
		{"Ce-Subject", "caf%c3%a9", "CE_SUBJECT=café"},
		{"Ce-Source", "/a%20b", "CE_SOURCE=/a b"},
		{"Ce-Subject", "%41%42C", "CE_SUBJECT=ABC"},
		{"Ce-Subject", "Euro%20%E2%82%AC%20%F0%9F%98%80", "CE_SUBJECT=Euro € 😀"},
		{"Ce-Subject", `"quoted \"value\" 100%25"`, `CE_SUBJECT=quoted "value" 100%`},
		{"Ce-Myext", "a%22b", `CE_MYEXT=a"b`},
		{"Ce-Subject", "%C0%A0", ""},        // overlong encoding of U+0020
		{"Ce-Subject", "%FF", ""},           // not UTF-8
		{"Ce-Subject", "100%", ""},          // malformed escape
		{"Ce-Subject", "%zz", ""},           // malformed escape
		{"Ce-Subject", "a%0Ab", ""},         // spec §Type System: String excludes control characters
		{"Ce-Id", "%C2%85", ""},             // U+0085, a C1 control character
		{"Ce-Subject", `"unterminated`, ""}, // RFC 7230 §3.2.6 quoted-string
	} {
		resp := h.do(binaryReq("t", "", "", tc.header, tc.value))
		if tc.env == "" {
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %q: %d, want 400", tc.header, tc.value, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("%s: %q: %d %s", tc.header, tc.value, resp.StatusCode, readBody(t, resp))
			continue
		}
		if env := h.f.last(t).Env; !hasEnv(env, tc.env) {
			t.Errorf("%s: %q: env %q, want %q", tc.header, tc.value, env, tc.env)
		}
	}
}

func hasEnv(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

// HTTP binding §3.1.3.2: "When encoding a CloudEvent as an HTTP message,
// string values represented as HTTP header values MUST be percent-encoded":
// space, '"', '%' and everything outside U+0021–U+007E.
func TestBindingReplyHeadersEncoded(t *testing.T) {
	h := newHarness(t, events.NewConfig().WithReplySource("/fn/é b"))
	resp := h.do(binaryReq("caf%C3%A9", "text/plain", "x"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Ce-Type"); got != "caf%C3%A9.reply" {
		t.Errorf("ce-type %q, want caf%%C3%%A9.reply", got)
	}
	if got := resp.Header.Get("Ce-Source"); got != "/fn/%C3%A9%20b" {
		t.Errorf("ce-source %q, want /fn/%%C3%%A9%%20b", got)
	}
}

// RFC 3339 §5.6: "T" and "Z" may be lower case; spec §time is RFC 3339.
func TestTimeLowerCase(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	resp := h.do(binaryReq("t", "", "", "Ce-Time", "2024-01-01t00:00:00z"))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("binary: %d %s", resp.StatusCode, readBody(t, resp))
	}
	if env := h.f.last(t).Env; !hasEnv(env, "CE_TIME=2024-01-01T00:00:00Z") {
		t.Errorf("binary env %q", env)
	}
	resp = h.do(structuredReq(`{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2024-01-01t00:00:00.5+01:00"}`))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("structured: %d %s", resp.StatusCode, readBody(t, resp))
	}
	if env := h.f.last(t).Env; !hasEnv(env, "CE_TIME=2023-12-31T23:00:00.5Z") {
		t.Errorf("structured env %q", env)
	}
}

// The JSON format's rules for structured mode.
func TestJSONFormatRules(t *testing.T) {
	const head = `{"specversion":"1.0","id":"1","source":"/s","type":"t"`
	h := newHarness(t, events.NewConfig())
	for _, tc := range []struct {
		name, doc string
		env       []string // nil: rejected with 400
		absent    string   // a variable that must not be set
		stdin     string
	}{
		// §3.1.1: "the presence of the data and data_base64 members is
		// mutually exclusive".
		{name: "data and data_base64", doc: head + `,"data":"a","data_base64":"Yg=="}`},
		// spec §Attribute Naming Convention: "CloudEvents attribute names
		// MUST consist of lower-case letters ('a' to 'z') or digits".
		{name: "upper-case member", doc: head + `,"MyExt":"b"}`},
		{name: "two spellings", doc: head + `,"myext":"a","MyExt":"b"}`},
		{name: "dashed member", doc: head + `,"my-ext":"b"}`},
		// §2.2: Integer is "number, only the integer component optionally
		// prefixed with a minus sign"; spec §Type System: 32-bit.
		{name: "fraction", doc: head + `,"myf":1.5}`},
		{name: "exponent", doc: head + `,"myf":1e3}`},
		{name: "over int32", doc: head + `,"myf":2147483648}`},
		{name: "object extension", doc: head + `,"myo":{"a":1}}`},
		{name: "integer", doc: head + `,"myf":-2147483648}`, env: []string{"CE_MYF=-2147483648"}},
		{name: "boolean", doc: head + `,"myb":true}`, env: []string{"CE_MYB=true"}},
		// §2.2: "a null value ... MUST be treated as the equivalent of
		// unset or omitted".
		{name: "null attribute", doc: head + `,"subject":null,"myext":null}`, absent: "CE_SUBJECT"},
		// spec §Type System: String excludes control characters.
		{name: "control character", doc: head + `,"subject":"a\u0007b"}`},
		{name: "core attribute not a string", doc: `{"specversion":"1.0","id":1,"source":"/s","type":"t"}`},
		// §3.1.2: no datacontenttype means application/json.
		{name: "JSON data without datacontenttype", doc: head + `,"data":{"a":1}}`,
			env: []string{"CE_DATACONTENTTYPE=application/json"}, stdin: `{"a":1}`},
		{name: "data_base64 without datacontenttype", doc: head + `,"data_base64":"AAE="}`,
			absent: "CE_DATACONTENTTYPE", stdin: "\x00\x01"},
		// §3.1.2: */*+json declares JSON: data is the JSON value; a string
		// is not deserialised further.
		{name: "+json data", doc: head + `,"datacontenttype":"application/vnd.api+json","data":"s"}`, stdin: `"s"`},
		{name: "text data", doc: head + `,"datacontenttype":"text/plain","data":"hi"}`, stdin: "hi"},
		{name: "bad base64", doc: head + `,"data_base64":"!!"}`},
	} {
		resp := h.do(structuredReq(tc.doc))
		body := readBody(t, resp)
		if tc.env == nil && tc.absent == "" && tc.stdin == "" {
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", tc.name, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
			continue
		}
		req := h.f.last(t)
		for _, kv := range tc.env {
			if !hasEnv(req.Env, kv) {
				t.Errorf("%s: env %q, want %q", tc.name, req.Env, kv)
			}
		}
		if tc.absent != "" {
			for _, e := range req.Env {
				if strings.HasPrefix(e, tc.absent+"=") {
					t.Errorf("%s: %s set", tc.name, e)
				}
			}
		}
		if tc.stdin != "" && string(req.Stdin) != tc.stdin {
			t.Errorf("%s: stdin %q, want %q", tc.name, req.Stdin, tc.stdin)
		}
	}
}

// Finding 8: only GET and HEAD on the health paths are health checks; a
// POSTed event there reaches the function like on any other path.
func TestEventsOnHealthPaths(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	for _, p := range []string{"/healthz", "/health/readiness", "/health/liveness"} {
		r := binaryReq("t", "text/plain", "x")
		r.URL.Path = p
		n := h.f.calls()
		if resp := h.do(r); resp.StatusCode != http.StatusOK || h.f.calls() != n+1 {
			t.Errorf("POST %s: %d, invoked %d times", p, resp.StatusCode, h.f.calls()-n)
		}
	}
}

// failing is an invoker whose error spans several lines.
type failing struct{}

func (failing) Runtime() string { return abi.RuntimeProcess }
func (failing) Invoke(context.Context, *abi.Request) (*abi.Response, error) {
	return &abi.Response{}, errors.New("first\nsecond\nthird")
}

// Finding 9: every line of a failure's message is prefixed with the id.
func TestFailurePrefixedEveryLine(t *testing.T) {
	var buf bytes.Buffer
	srv, err := events.New(failing{}, events.NewConfig().WithFunction("fn").WithRegisterer(prometheus.NewRegistry()).WithStderr(&buf))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, binaryReq("t", "", "", "Ce-Id", "ev-9"))
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("stderr %q, want 3 lines", buf.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "[ev-9] ") {
			t.Errorf("line %q not prefixed", l)
		}
	}
}

// A plain HTTP request (no CloudEvents headers) is an invocation with
// CGI's environment; the guest's CGI header block sets the reply.
func TestPlainHTTP(t *testing.T) {
	inv := &cgiGuest{}
	reg := prometheus.NewRegistry()
	srv, err := events.New(inv, events.NewConfig().WithFunction("fn").WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/orders/7?x=1&y=%20", strings.NewReader("hello"))
	r.Header.Set("Content-Type", "text/plain")
	r.Header.Set("X-Tenant", "acme")
	r.Header.Add("Accept", "a/b")
	r.Header.Add("Accept", "c/d")
	r.Header.Set("Proxy", "http://evil/")
	inv.out = "Status: 201 Created\nContent-Type: application/json\nX-Order: 7\n\n{\"ok\":true}"
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, r)
	if rec.Code != 201 || rec.Body.String() != `{"ok":true}` || rec.Header().Get("X-Order") != "7" ||
		rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("reply %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	for _, kv := range []string{"REQUEST_METHOD=POST", "PATH_INFO=/orders/7", "QUERY_STRING=x=1&y=%20",
		"CONTENT_TYPE=text/plain", "CONTENT_LENGTH=5", "HTTP_X_TENANT=acme", "HTTP_ACCEPT=a/b, c/d",
		"GATEWAY_INTERFACE=CGI/1.1", "SERVER_PROTOCOL=HTTP/1.1"} {
		if !hasEnv(inv.env, kv) {
			t.Errorf("env %q, want %q", inv.env, kv)
		}
	}
	for _, e := range inv.env {
		if strings.HasPrefix(e, "HTTP_PROXY=") {
			t.Errorf("%s passed (httpoxy)", e)
		}
	}
	if string(inv.stdin) != "hello" {
		t.Errorf("stdin %q", inv.stdin)
	}

	for _, tc := range []struct {
		out, body string
		code      int
	}{
		{"just text\n", "just text\n", 200},                  // no header block: all body
		{"Status: 404 Not Found\r\n\r\nnope", "nope", 404},   // CRLF
		{"Location: /elsewhere\n\n", "", 302},                // RFC 3875 §6.2.3
		{"Status: 99 Odd\n\n", "", 500},                      // invalid status
		{"Content-Type: text/plain\nno colon\n\nx", "", 500}, // malformed block
		// A control character in a value: HTTP/1 clients refused the
		// whole response ("malformed MIME header line").
		{"Content-Type: text/plain\nX-A: a\x01b\n\nx", "", 500},
		{"Content-Type: text/plain\nX-A: a\x7fb\n\nx", "", 500},
		{"Content-Type: text/plain\nX-A: a\tb\xff\n\nx", "x", 200}, // HTAB and obs-text are field content
		{"", "", 200},                // nothing: an empty 200
		{"status: 418\n\n", "", 418}, // names are case-insensitive
		{"Content-Type: text/plain\n(no blank line)", "Content-Type: text/plain\n(no blank line)", 200},
	} {
		inv.out = tc.out
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x")))
		if rec.Code != tc.code || (tc.code != 500 && rec.Body.String() != tc.body) {
			t.Errorf("stdout %q: %d %q, want %d %q", tc.out, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
	}

	// GET is not an invocation unless the protocol is http; with
	// cloudevents a plain POST is 415.
	rec = httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	if rec.Code != 405 {
		t.Errorf("GET, protocol auto: %d, want 405", rec.Code)
	}
	for proto, want := range map[events.Protocol]int{events.ProtocolCloudEvents: 415, events.ProtocolHTTP: 200} {
		inv.out = "ok"
		srv, err := events.New(inv, events.NewConfig().WithFunction("fn").WithRegisterer(prometheus.NewRegistry()).WithProtocol(proto))
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
		if proto == events.ProtocolHTTP {
			r = binaryReq("t", "", "")
			r.Method = http.MethodGet
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, r)
		if rec.Code != want {
			t.Errorf("protocol %s: %d, want %d", proto, rec.Code, want)
		}
		if proto == events.ProtocolHTTP && (!hasEnv(inv.env, "REQUEST_METHOD=GET") || !hasEnv(inv.env, "HTTP_CE_TYPE=t")) {
			t.Errorf("protocol http: env %q", inv.env)
		}
	}
}

// cgiGuest records its request and prints out.
type cgiGuest struct {
	out   string
	env   []string
	stdin []byte
}

func (g *cgiGuest) Runtime() string { return abi.RuntimeProcess }
func (g *cgiGuest) Invoke(_ context.Context, req *abi.Request) (*abi.Response, error) {
	g.env, g.stdin = req.Env, bytes.Clone(req.Stdin)
	return &abi.Response{Stdout: []byte(g.out)}, nil
}

// W3C Trace Context reaches the guest (TRACEPARENT, TRACESTATE) and the
// reply, and the histograms carry the trace id as an exemplar in the
// OpenMetrics format.
func TestTraceContext(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	h := newHarness(t, events.NewConfig())
	resp := h.do(binaryReq("t", "text/plain", "x", "Traceparent", tp, "Tracestate", "congo=t61rcWkgMzE"))
	if resp.StatusCode != 200 || resp.Header.Get("Traceparent") != tp || resp.Header.Get("Tracestate") != "congo=t61rcWkgMzE" {
		t.Fatalf("reply %d, traceparent %q tracestate %q", resp.StatusCode, resp.Header.Get("Traceparent"), resp.Header.Get("Tracestate"))
	}
	if env := h.f.last(t).Env; !hasEnv(env, "TRACEPARENT="+tp) || !hasEnv(env, "TRACESTATE=congo=t61rcWkgMzE") {
		t.Errorf("env %q", env)
	}
	for _, bad := range []string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "junk"} {
		h.do(binaryReq("t", "", "", "Traceparent", bad, "Tracestate", "a=b"))
		for _, e := range h.f.last(t).Env {
			if strings.HasPrefix(e, "TRACE") {
				t.Errorf("invalid traceparent %q: %s passed", bad, e)
			}
		}
	}

	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	rec := httptest.NewRecorder()
	h.srv.MetricsHandler().ServeHTTP(rec, r)
	b, _ := io.ReadAll(rec.Body)
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "nebula_invocation_duration_seconds_bucket") && strings.Contains(line, `# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no exemplar with the trace id in the OpenMetrics scrape:\n%s", grepLines(string(b), "nebula_invocation_duration_seconds_bucket"))
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
