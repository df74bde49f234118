package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// TestMain runs main itself when NEBULA_TEST_MAIN is set, so that a test
// can check the exit status of the real binary's code path.
func TestMain(m *testing.M) {
	if os.Getenv("NEBULA_TEST_MAIN") == "1" {
		os.Args = append([]string{"nebula"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Timings the fake invoker reports, so Server-Timing is deterministic but
// for queue and total.
const (
	fakeStartup   = 2 * time.Millisecond
	fakeExecution = 3 * time.Millisecond
)

// upperInvoker is the function: it echoes its stdin upper-cased, and
// records what each invocation received. An event of type "test.fail", or
// whose id is in fail, exits with status 3.
type upperInvoker struct {
	fail map[string]bool
	// together, when set, holds every invocation until that many run at
	// once (or the invocation's deadline passes).
	together *barrier

	mu    sync.Mutex
	calls map[string]*abi.Request // by event id
	order []string
}

func (*upperInvoker) Runtime() string { return abi.RuntimeProcess }

func (f *upperInvoker) Invoke(ctx context.Context, req *abi.Request) (*abi.Response, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*abi.Request{}
	}
	f.calls[req.ID] = &abi.Request{ID: req.ID, Stdin: bytes.Clone(req.Stdin), Env: slices.Clone(req.Env)}
	f.order = append(f.order, req.ID)
	f.mu.Unlock()
	if f.together != nil {
		f.together.wait(ctx)
	}
	resp := &abi.Response{Stdout: bytes.ToUpper(req.Stdin), Startup: fakeStartup, Execution: fakeExecution}
	if f.fail[req.ID] || slices.Contains(req.Env, "CE_TYPE=test.fail") {
		return &abi.Response{Startup: fakeStartup, Execution: fakeExecution}, &abi.ExitError{Code: 3}
	}
	return resp, nil
}

// call returns what the invocation of event id received.
func (f *upperInvoker) call(t *testing.T, id string) *abi.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	req, ok := f.calls[id]
	if !ok {
		t.Fatalf("event %q was not invoked; invoked: %q", id, f.order)
	}
	return req
}

func (f *upperInvoker) invoked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.order)
}

// env returns the value of name in req's environment.
func env(req *abi.Request, name string) (string, bool) {
	for _, kv := range req.Env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	return "", false
}

// barrier releases its waiters once n arrived.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
	case <-ctx.Done():
	}
}

// frontDoor is the real events front door over an in-process HTTP server,
// recording the headers of every request and counting connections.
type frontDoor struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
	conns   atomic.Int32
}

func newFrontDoor(t *testing.T, inv abi.Invoker, cfg events.Config) *frontDoor {
	t.Helper()
	srv, err := events.New(inv, cfg.WithFunction("t"))
	if err != nil {
		t.Fatal(err)
	}
	fd := &frontDoor{}
	h := srv.Handler()
	fd.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fd.mu.Lock()
		fd.headers = append(fd.headers, r.Header.Clone())
		fd.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	fd.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			fd.conns.Add(1)
		}
	}
	fd.Start()
	t.Cleanup(fd.Close)
	return fd
}

// requests returns the headers of the requests received so far.
func (fd *frontDoor) requests() []http.Header {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	return slices.Clone(fd.headers)
}

// runIn executes `nebula args...` with stdin and returns its stdout,
// stderr and error.
func runIn(t *testing.T, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

// reply is the parsed output of a single `nebula invoke`.
type reply struct {
	status string
	attrs  map[string]string
	names  []string // in printed order
	data   string
	timing string
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func parseReply(t *testing.T, out string) reply {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("output too short:\n%s", out)
	}
	r := reply{status: lines[0], attrs: map[string]string{}, timing: lines[len(lines)-1]}
	body := lines[1 : len(lines)-1]
	for i, l := range body {
		if l == "" {
			r.data = strings.Join(body[i+1:], "\n")
			break
		}
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("attribute line %q is not NAME: VALUE in\n%s", l, out)
		}
		r.attrs[k] = v
		r.names = append(r.names, k)
	}
	return r
}

// checkReplyEvent checks the attributes the front door sets on every reply.
func checkReplyEvent(t *testing.T, r reply, wantType, wantCT, wantData string) {
	t.Helper()
	if r.status != "HTTP/1.1 200 OK" {
		t.Errorf("status line %q, want HTTP/1.1 200 OK", r.status)
	}
	if !slices.IsSorted(r.names) {
		t.Errorf("attributes not sorted: %q", r.names)
	}
	want := map[string]string{
		"specversion":     "1.0",
		"source":          "/nebula/t",
		"type":            wantType,
		"datacontenttype": wantCT,
	}
	for k, v := range want {
		if r.attrs[k] != v {
			t.Errorf("reply %s = %q, want %q", k, r.attrs[k], v)
		}
	}
	if !uuidRE.MatchString(r.attrs["id"]) {
		t.Errorf("reply id %q is not a UUID", r.attrs["id"])
	}
	if _, err := time.Parse(time.RFC3339Nano, r.attrs["time"]); err != nil {
		t.Errorf("reply time: %v", err)
	}
	if len(r.attrs) != len(want)+2 {
		t.Errorf("reply attributes %v, want exactly specversion, id, source, type, time, datacontenttype", r.attrs)
	}
	if r.data != wantData {
		t.Errorf("reply data %q, want %q", r.data, wantData)
	}
	checkTiming(t, r.timing)
}

// timingRE is the server-timing line of a single invocation: the fake's
// start and exec, a queue of 0 (a free slot) and some total.
var timingRE = regexp.MustCompile(`^server-timing: queue=0\.000ms start=2\.000ms exec=3\.000ms total=\d+\.\d{3}ms$`)

func checkTiming(t *testing.T, line string) {
	t.Helper()
	if !timingRE.MatchString(line) {
		t.Errorf("timing line %q does not match %s", line, timingRE)
	}
}

func TestInvokeBinary(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL+"/some/path", "--id", "e1",
		"--data", `{"msg":"hi"}`, "-e", "tenant=acme", "--extension", "region2=eu,west", "--subject", "s1")
	if err != nil {
		t.Fatalf("nebula invoke: %v\nstderr: %s", err, stderr)
	}
	checkReplyEvent(t, parseReply(t, stdout), "dev.nebula.invoke.reply", "application/json", `{"MSG":"HI"}`)

	h := fd.requests()
	if len(h) != 1 {
		t.Fatalf("%d requests, want 1", len(h))
	}
	if got := h[0].Get("Content-Type"); got != "application/json" {
		t.Errorf("request Content-Type %q, want application/json (binary mode)", got)
	}
	if got := h[0].Get("Ce-Id"); got != "e1" {
		t.Errorf("request Ce-Id %q, want e1 (binary mode)", got)
	}

	call := inv.call(t, "e1")
	if string(call.Stdin) != `{"msg":"hi"}` {
		t.Errorf("stdin %q", call.Stdin)
	}
	for k, want := range map[string]string{
		"CE_SPECVERSION":     "1.0",
		"CE_ID":              "e1",
		"CE_SOURCE":          "/nebula/invoke",
		"CE_TYPE":            "dev.nebula.invoke",
		"CE_SUBJECT":         "s1",
		"CE_DATACONTENTTYPE": "application/json",
		"CE_TENANT":          "acme",
		"CE_REGION2":         "eu,west",
	} {
		if got, ok := env(call, k); got != want {
			t.Errorf("%s = %q (set: %v), want %q", k, got, ok, want)
		}
	}
	if v, _ := env(call, "CE_TIME"); !strings.HasSuffix(v, "Z") {
		t.Errorf("CE_TIME = %q, want an RFC 3339 UTC time", v)
	}
}

func TestInvokeStructured(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL, "--structured", "--id", "s1",
		"--source", "https://example.com/src", "--type", "com.example.t",
		"--content-type", "text/plain", "--data", "hello\nworld", "-e", "traceparent=00-abc-01")
	if err != nil {
		t.Fatalf("nebula invoke: %v\nstderr: %s", err, stderr)
	}
	checkReplyEvent(t, parseReply(t, stdout), "com.example.t.reply", "text/plain; charset=utf-8", "HELLO\nWORLD")

	h := fd.requests()
	if len(h) != 1 || h[0].Get("Content-Type") != "application/cloudevents+json" || h[0].Get("Ce-Id") != "" {
		t.Errorf("request headers %v, want a structured-mode request", h)
	}
	call := inv.call(t, "s1")
	if string(call.Stdin) != "hello\nworld" {
		t.Errorf("stdin %q", call.Stdin)
	}
	for k, want := range map[string]string{
		"CE_SOURCE":          "https://example.com/src",
		"CE_TYPE":            "com.example.t",
		"CE_DATACONTENTTYPE": "text/plain",
		"CE_TRACEPARENT":     "00-abc-01",
	} {
		if got, _ := env(call, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// Data that is not UTF-8 travels as data_base64 in structured mode and
// reaches the function byte for byte; JSON travels as a JSON value.
func TestInvokeStructuredData(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	bin := filepath.Join(t.TempDir(), "data.bin")
	raw := []byte{0, 1, 0xfe, 0xff, 'a'}
	if err := os.WriteFile(bin, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []byte
	}{
		{"bytes", []string{"--file", bin, "--content-type", "application/octet-stream"}, raw},
		// A JSON value, which sdk-go's encoder writes compacted.
		{"json", []string{"--data", `[1, "x"]`}, []byte(`[1,"x"]`)},
		{"invalid-json", []string{"--data", `{nope`}, []byte(`{nope`)},
		{"vendor-json", []string{"--data", `{"a":1}`, "--content-type", "application/vnd.api+json"}, []byte(`{"a":1}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "d-" + tc.name
			args := append([]string{"invoke", fd.URL, "--structured", "--id", id}, tc.args...)
			if _, stderr, err := runIn(t, nil, args...); err != nil {
				t.Fatalf("nebula invoke: %v\nstderr: %s", err, stderr)
			}
			if got := inv.call(t, id).Stdin; !bytes.Equal(got, tc.want) {
				t.Errorf("stdin %q, want %q", got, tc.want)
			}
		})
	}
}

func TestInvokeDataFromFileAndStdin(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	file := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(file, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		stdin io.Reader
		args  []string
		want  string
	}{
		{"file", nil, []string{"--file", file}, "from a file\n"},
		{"stdin", strings.NewReader("from stdin"), []string{"--file", "-"}, "from stdin"},
		{"stdin-structured", strings.NewReader("from stdin"), []string{"--file", "-", "--structured"}, "from stdin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "f-" + tc.name
			args := append([]string{"invoke", fd.URL, "--id", id, "--content-type", "text/plain"}, tc.args...)
			stdout, stderr, err := runIn(t, tc.stdin, args...)
			if err != nil {
				t.Fatalf("nebula invoke: %v\nstderr: %s", err, stderr)
			}
			if got := string(inv.call(t, id).Stdin); got != tc.want {
				t.Errorf("stdin %q, want %q", got, tc.want)
			}
			checkReplyEvent(t, parseReply(t, stdout), "dev.nebula.invoke.reply", "text/plain; charset=utf-8", strings.TrimSuffix(strings.ToUpper(tc.want), "\n"))
		})
	}
}

func TestInvokeAccepted(t *testing.T) {
	for _, mode := range []string{"binary", "structured"} {
		t.Run(mode, func(t *testing.T) {
			inv := &upperInvoker{}
			fd := newFrontDoor(t, inv, events.NewConfig())
			args := []string{"invoke", fd.URL, "--id", "a1"}
			if mode == "structured" {
				args = append(args, "--structured")
			}
			stdout, stderr, err := runIn(t, nil, args...)
			if err != nil {
				t.Fatalf("nebula invoke: %v\nstderr: %s", err, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if len(lines) != 3 || lines[0] != "HTTP/1.1 202 Accepted" || lines[1] != "accepted, no reply" {
				t.Fatalf("output:\n%s\nwant the 202 status line, 'accepted, no reply' and the timing", stdout)
			}
			checkTiming(t, lines[2])
			call := inv.call(t, "a1")
			if len(call.Stdin) != 0 {
				t.Errorf("stdin %q, want none", call.Stdin)
			}
			if v, ok := env(call, "CE_DATACONTENTTYPE"); ok {
				t.Errorf("CE_DATACONTENTTYPE = %q for an event without data", v)
			}
		})
	}
}

func TestInvokeNon2xx(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL, "--type", "test.fail", "--data", "{}")
	if err == nil {
		t.Fatalf("nebula invoke succeeded on a 500:\n%s", stdout)
	}
	if !strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Errorf("error %q does not name the status", err)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "HTTP/1.1 500 Internal Server Error" || lines[1] != "function exited with status 3" {
		t.Fatalf("stderr:\n%s\nwant the status line, the body and the timing", stderr)
	}
	checkTiming(t, lines[2])
}

// The real command path exits with status 1 on a non-2xx answer, the
// status and body on stderr.
func TestInvokeExitStatus(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	cmd := exec.Command(os.Args[0], "invoke", fd.URL, "--type", "test.fail")
	cmd.Env = append(os.Environ(), "NEBULA_TEST_MAIN=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("nebula invoke: %v, want exit status 1\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{
		"HTTP/1.1 500 Internal Server Error\n",
		"function exited with status 3\n",
		"nebula: " + fd.URL + " answered 500 Internal Server Error\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr.String(), want)
		}
	}

	// And 0 on success.
	cmd = exec.Command(os.Args[0], "invoke", fd.URL, "--data", "{}")
	cmd.Env = append(os.Environ(), "NEBULA_TEST_MAIN=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nebula invoke: %v\n%s", err, out)
	}
}

// summaryRE matches a burst summary; its groups are the status counts and
// the phase quantiles.
var summaryRE = regexp.MustCompile(`^(\d+) events over (\d+) connections:((?: \w+=\d+)+); client p50=\d+\.\d{3}ms p99=\d+\.\d{3}ms; queue p50=\d+\.\d{3}ms p99=\d+\.\d{3}ms; start (p50=\S+ p99=\S+); exec (p50=\S+ p99=\S+); total p50=\d+\.\d{3}ms p99=\d+\.\d{3}ms$`)

func TestInvokeBurst(t *testing.T) {
	inv := &upperInvoker{fail: map[string]bool{"b-3": true, "b-5": true}}
	fd := newFrontDoor(t, inv, events.NewConfig().WithConcurrency(3))
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL, "--id", "b", "--data", `"x"`,
		"-e", "run=7", "--count", "7", "--concurrency", "3")
	if err == nil || err.Error() != "2 of 7 events were not answered 2xx" {
		t.Errorf("error %v, want 2 of 7 events were not answered 2xx", err)
	}
	if stderr != "" {
		t.Errorf("stderr %q", stderr)
	}
	m := summaryRE.FindStringSubmatch(strings.TrimSuffix(stdout, "\n"))
	if m == nil || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("summary %q does not match %s", stdout, summaryRE)
	}
	if m[1] != "7" || m[2] != "3" || m[3] != " 200=5 500=2" {
		t.Errorf("summary %q: want 7 events over 3 connections, 200=5 500=2", stdout)
	}
	if m[4] != "p50=2.000ms p99=2.000ms" || m[5] != "p50=3.000ms p99=3.000ms" {
		t.Errorf("summary %q: want the fake's start and exec", stdout)
	}
	if n := fd.conns.Load(); n > 3 {
		t.Errorf("%d connections, want at most 3", n)
	}
	ids := inv.invoked()
	slices.Sort(ids)
	if want := []string{"b-1", "b-2", "b-3", "b-4", "b-5", "b-6", "b-7"}; !slices.Equal(ids, want) {
		t.Errorf("invoked %q, want %q once each", ids, want)
	}
	for _, id := range ids {
		call := inv.call(t, id)
		if v, _ := env(call, "CE_RUN"); v != "7" || string(call.Stdin) != `"x"` {
			t.Errorf("%s: CE_RUN=%q stdin %q", id, v, call.Stdin)
		}
	}
}

// A burst runs --concurrency requests at once, over that many connections:
// the function holds each invocation until three run together.
func TestInvokeBurstConcurrency(t *testing.T) {
	inv := &upperInvoker{together: newBarrier(3)}
	fd := newFrontDoor(t, inv, events.NewConfig().WithConcurrency(3).WithTimeout(20*time.Second))
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL, "--data", "{}", "--count", "9", "--concurrency", "3")
	if err != nil {
		t.Fatalf("nebula invoke: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	m := summaryRE.FindStringSubmatch(strings.TrimSuffix(stdout, "\n"))
	if m == nil || m[1] != "9" || m[2] != "3" || m[3] != " 200=9" {
		t.Fatalf("summary %q, want 9 events over 3 connections: 200=9", stdout)
	}
	if n := fd.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
	ids := inv.invoked()
	seen := map[string]bool{}
	for _, id := range ids {
		if !uuidRE.MatchString(id) || seen[id] {
			t.Errorf("event id %q: want a fresh UUID per event", id)
		}
		seen[id] = true
	}
	if len(ids) != 9 {
		t.Errorf("%d invocations, want 9", len(ids))
	}
}

// --concurrency above --count uses --count connections; a transport
// failure is counted as an error.
func TestInvokeBurstEdges(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, _, err := runIn(t, nil, "invoke", fd.URL, "--count", "2", "--concurrency", "10")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout, "2 events over 2 connections: 202=2; client p50=") {
		t.Errorf("summary %q", stdout)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	stdout, _, err = runIn(t, nil, "invoke", dead, "--count", "2")
	if err == nil || !strings.HasPrefix(err.Error(), "2 of 2 events failed (first error: ") {
		t.Errorf("error %v", err)
	}
	if stdout != "2 events over 1 connection: error=2\n" {
		t.Errorf("summary %q", stdout)
	}
}

// --timeout gives up on a function that does not answer: this one waits
// for a second invocation that never comes, until the client goes away.
func TestInvokeTimeout(t *testing.T) {
	inv := &upperInvoker{together: newBarrier(2)}
	fd := newFrontDoor(t, inv, events.NewConfig())
	_, _, err := runIn(t, nil, "invoke", fd.URL, "--data", "{}", "--timeout", "100ms")
	if err == nil || !strings.Contains(err.Error(), "Client.Timeout exceeded") {
		t.Errorf("error %v, want the client's timeout", err)
	}
}

func TestInvokeFlagErrors(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-e", "tenant"}, `--extension "tenant": want NAME=VALUE`},
		{[]string{"-e", "Tenant=a"}, `--extension "Tenant=a": the name "Tenant" is not a CloudEvents attribute name`},
		{[]string{"-e", "my_ext=a"}, `--extension "my_ext=a": the name "my_ext" is not`},
		{[]string{"-e", "=a"}, `--extension "=a": the name "" is not`},
		{[]string{"-e", "id=a"}, `--extension "id=a": id is a core attribute, not an extension: use --id`},
		{[]string{"-e", "time=a"}, `--extension "time=a": time is a core attribute`},
		{[]string{"-e", "a=1", "-e", "a=2"}, `--extension "a=2": a is given more than once`},
		{[]string{"--count", "0"}, "--count 0: must be at least 1"},
		{[]string{"--count", "-3"}, "--count -3: must be at least 1"},
		{[]string{"--concurrency", "0", "--count", "2"}, "--concurrency 0: must be at least 1"},
		{[]string{"--data", "x", "--file", "y"}, "--data and --file: give at most one of them"},
		{[]string{"--data", "", "--file", "-"}, "--data and --file"},
		{[]string{"--file", filepath.Join(t.TempDir(), "missing")}, "--file: open "},
		{[]string{"--content-type", "not a type"}, `--content-type "not a type": not a media type`},
		{[]string{"--timeout", "-1s"}, "--timeout -1s: must not be negative"},
		{[]string{"--id", ""}, `--id "": `},
		{[]string{"--type", ""}, `--type "": `},
		{[]string{"--source", ""}, `--source "": `},
		{[]string{"--source", "%zz"}, `--source "%zz": not a URI-reference: invalid URL escape "%zz"`},
		{[]string{"--count", "x"}, `invalid argument "x" for "--count" flag`},
		{[]string{"--http", "--structured"}, "--http sends no CloudEvent"},
		{[]string{"--http", "-e", "a=b"}, "--http sends no CloudEvent"},
		{[]string{"--method", "PUT"}, "--method applies to --http only"},
		{[]string{"--http", "--method", "P T"}, `--method "P T": not an HTTP method token`},
		{[]string{"-H", "novalue"}, `--header "novalue": want "Name: value"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"invoke", fd.URL}, tc.args...)
			_, _, err := runIn(t, strings.NewReader(""), args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	for _, u := range []string{"localhost:8080", "ftp://h/", "/path", "http://"} {
		_, _, err := runIn(t, nil, "invoke", u)
		if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("URL %q", u)) {
			t.Errorf("invoke %s: %v, want an error naming the URL", u, err)
		}
	}
	if _, _, err := runIn(t, nil, "invoke"); err == nil {
		t.Error("invoke without a URL succeeded")
	}
	if got := fd.requests(); len(got) != 0 {
		t.Errorf("%d requests sent despite bad flags", len(got))
	}
}

// TestInvokeHTTP: --http sends a plain request, which the front door runs
// as a plain HTTP invocation, and prints status, headers and body.
func TestInvokeHTTP(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, stderr, err := runIn(t, nil, "invoke", "--http", fd.URL+"/orders?id=7", "--data", "hi",
		"--content-type", "text/plain", "-H", "X-Tenant: acme", "-H", "X-Request-Id: r-1")
	if err != nil {
		t.Fatalf("nebula invoke --http: %v\nstderr: %s", err, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if lines[0] != "HTTP/1.1 200 OK" || !slices.Contains(lines, "content-type: text/plain; charset=utf-8") ||
		!slices.Contains(lines, "HI") {
		t.Errorf("output:\n%s", stdout)
	}
	checkTiming(t, lines[len(lines)-1])
	h := fd.requests()
	if len(h) != 1 || h[0].Get("Ce-Specversion") != "" || h[0].Get("X-Tenant") != "acme" {
		t.Fatalf("requests %v", h)
	}
	call := inv.call(t, "r-1")
	for _, kv := range []string{"REQUEST_METHOD=POST", "PATH_INFO=/orders", "QUERY_STRING=id=7", "HTTP_X_TENANT=acme", "CONTENT_TYPE=text/plain"} {
		if !slices.Contains(call.Env, kv) {
			t.Errorf("env %q lacks %s", call.Env, kv)
		}
	}

	// A burst, and a method other than POST under protocol=http.
	fd = newFrontDoor(t, inv, events.NewConfig().WithProtocol(events.ProtocolHTTP))
	stdout, _, err = runIn(t, nil, "invoke", "--http", "--method", "PUT", fd.URL+"/", "--data", "x", "--count", "4", "--concurrency", "2")
	if err != nil || !strings.HasPrefix(stdout, "4 events over 2 connections: 200=4;") {
		t.Errorf("burst: %v %q", err, stdout)
	}
}

// TestInvokePercentEncoding: nebula invoke percent-encodes ce-* values and
// decodes the reply's (HTTP binding §3.1.3.2).
func TestInvokePercentEncoding(t *testing.T) {
	inv := &upperInvoker{}
	fd := newFrontDoor(t, inv, events.NewConfig())
	stdout, stderr, err := runIn(t, nil, "invoke", fd.URL, "--id", "e-%", "--type", "café", "--subject", "a b", "--data", "x")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	h := fd.requests()[0]
	if h.Get("Ce-Id") != "e-%25" || h.Get("Ce-Type") != "caf%C3%A9" || h.Get("Ce-Subject") != "a%20b" {
		t.Errorf("request headers %v", h)
	}
	if got, _ := env(inv.call(t, "e-%"), "CE_TYPE"); got != "café" {
		t.Errorf("CE_TYPE %q", got)
	}
	if !strings.Contains(stdout, "type: café.reply\n") {
		t.Errorf("reply not decoded:\n%s", stdout)
	}
}

func TestParseServerTiming(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"queue;dur=0.001, start;dur=1.5, exec;dur=2.25, total;dur=3.000", "queue=0.001ms start=1.500ms exec=2.250ms total=3.000ms"},
		{`cache;desc="hit";dur=0.4,db;dur="12"`, "cache=0.400ms db=12.000ms"},
		{"miss, ;dur=4, x;dur=bad", "miss=0.000ms x=0.000ms"},
		{"", "(none)"},
	} {
		if got := formatPhases(parseServerTiming(tc.in)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}
