package events_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// rawHeaders is a binary-mode request's head, up to the blank line, with
// the given Content-Length.
func rawHeaders(length int64) string {
	return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nCe-Specversion: 1.0\r\nCe-Id: slow\r\nCe-Source: /s\r\n"+
		"Ce-Type: t\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", length)
}

// dialSend opens a connection and writes s on it.
func dialSend(t *testing.T, addr, s string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
	return c
}

// readStatus reads the status code of the response on c.
func readStatus(t *testing.T, c net.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func host(url string) string { return strings.TrimPrefix(url, "http://") }

// Finding 1: requests that send their headers and not their body take no
// slot: with one slot and no queue, 22 of them do not keep a complete event
// from running, and each gets 408 once its body deadline passes.
func TestHeaderOnlyRequestsTakeNoSlot(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig().WithConcurrency(1).WithQueue(0, time.Second).
		WithBodyTimeout(500*time.Millisecond))
	url, _ := serving(t, srv, context.Background())
	var stalled []net.Conn
	for range 22 {
		stalled = append(stalled, dialSend(t, host(url), rawHeaders(10)))
	}
	time.Sleep(100 * time.Millisecond) // let them reach the handler
	resp, err := post(t, http.DefaultClient, url+"/", "t")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a complete event beside 22 header-only requests: %v %v, want 200", resp, err)
	}
	for _, c := range stalled {
		if code := readStatus(t, c); code != http.StatusRequestTimeout {
			t.Fatalf("header-only request: %d, want 408", code)
		}
	}
}

// Finding 2: a declared Content-Length is not allocated. With a 1 TiB body
// limit, a request declaring 1 GiB and sending 10 bytes costs kilobytes.
func TestDeclaredLengthNotAllocated(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig().WithMaxBody(1<<40).WithBodyTimeout(300*time.Millisecond))
	url, _ := serving(t, srv, context.Background())
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c := dialSend(t, host(url), rawHeaders(1<<30)+"0123456789")
	if code := readStatus(t, c); code != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", code)
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
		t.Fatalf("allocated %d bytes for a 10-byte body declared as 1 GiB", d)
	}
}

// Bodies in memory stay within the budget, so a second large body arriving
// beside a stalled one gets 503 with Retry-After, and the stalled one 408:
// with one slot and no queue the default budget is one max body; a
// configured budget (the shim's share of a memory-limited container) holds
// even when slots and queue places are free.
func TestBodyBudget(t *testing.T) {
	const max = 1 << 20
	for _, tc := range []struct {
		name string
		cfg  events.Config
	}{
		{"default", events.NewConfig().WithConcurrency(1).WithQueue(0, time.Second)},
		{"configured", events.NewConfig().WithConcurrency(4).WithQueue(4, time.Second).WithBodyBudget(max)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, &fake{}, tc.cfg.WithMaxBody(max).WithBodyTimeout(2*time.Second))
			url, _ := serving(t, srv, context.Background())
			chunk := strings.Repeat("x", 700<<10)
			first := dialSend(t, host(url), rawHeaders(max)+chunk)
			time.Sleep(200 * time.Millisecond)
			second := dialSend(t, host(url), rawHeaders(max)+chunk)
			_ = second.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(second), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("second body: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if code := readStatus(t, first); code != http.StatusRequestTimeout {
				t.Fatalf("stalled body: %d, want 408", code)
			}
			// The budget is given back: a whole event goes through.
			if resp, err := post(t, http.DefaultClient, url+"/", "t"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("after: %v %v", resp, err)
			}
		})
	}
}

// Finding 3: idle keep-alive connections beyond the cap do not lock new
// clients out, on either port: each new connection evicts the longest-idle
// one.
func TestIdleConnectionsEvicted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	srv, err := events.New(&fake{}, events.NewConfig().WithFunction("fn").WithRegisterer(reg).WithMaxConnections(8))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serving(t, srv, context.Background())
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeMetrics(context.Background(), mln)
	murl := "http://" + mln.Addr().String() + "/metrics"

	// idle opens n connections that make one request each and stay idle;
	// those over the cap may be refused.
	idle := func(target, req string, n int) {
		for range n {
			c, err := net.Dial("tcp", target)
			if err != nil {
				continue
			}
			t.Cleanup(func() { c.Close() })
			if _, err := io.WriteString(c, req); err == nil {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					resp.Body.Close()
				}
			}
		}
	}
	idle(host(url), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 8)
	idle(mln.Addr().String(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", events.MetricsMaxConnections)
	time.Sleep(1100 * time.Millisecond) // idle long enough to be evicted
	for i := range 5 {
		c := &http.Client{Transport: &http.Transport{}}
		if resp, err := post(t, c, url+"/", "t"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("event %d beside idle connections: %v %v", i, resp, err)
		}
		resp, err := c.Get(murl)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scrape %d beside idle connections: %v %v", i, resp, err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
	}
	// Young connections are not evicted: more of them are refused.
	idle(host(url), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 32)
	idle(mln.Addr().String(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", events.MetricsMaxConnections)
	fams := scrape(t, srv.MetricsHandler())
	shed := map[string]float64{}
	for _, m := range fams["nebula_connections_shed_total"].GetMetric() {
		shed[label(m, "listener")] = m.GetCounter().GetValue()
	}
	if shed["events"] < 30 || shed["metrics"] < events.MetricsMaxConnections {
		t.Errorf("shed connections %v; want at least 30 on events and %d on metrics", shed, events.MetricsMaxConnections)
	}
}

// At the cap with every connection inside a request, a new connection is
// closed at once rather than left waiting in the accept queue.
func TestBusyCapRefusesPromptly(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig().WithMaxConnections(4).WithBodyTimeout(5*time.Second))
	url, _ := serving(t, srv, context.Background())
	for range 4 {
		dialSend(t, host(url), rawHeaders(10)) // inside a request: not evictable
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	c, err := net.Dial("tcp", host(url))
	if err == nil {
		defer c.Close()
		_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("a connection over a busy cap: %v after %v; want it closed", err, time.Since(start))
	}
}

// Slowloris: at the cap, the oldest connection still sending its headers
// (for at least a second) makes room for a new client.
func TestSlowHeadersEvicted(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig().WithMaxConnections(4))
	url, _ := serving(t, srv, context.Background())
	for range 10 { // those over the cap are refused
		if c, err := net.Dial("tcp", host(url)); err == nil {
			t.Cleanup(func() { c.Close() })
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nCe-Spec")
		}
	}
	time.Sleep(1100 * time.Millisecond) // slow long enough to be evicted
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if resp, err := post(t, c, url+"/", "t"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("event beside slow headers: %v %v", resp, err)
	}
}

// A header block over MaxHeaderBytes is refused with 431.
func TestHugeHeaders(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig())
	url, _ := serving(t, srv, context.Background())
	c := dialSend(t, host(url), "POST / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 1<<20)+"\r\n\r\n")
	if code := readStatus(t, c); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1 MiB of headers: %d, want 431", code)
	}
}

// spinner is a wasm-like invoker that counts the invocations running at
// once.
type spinner struct {
	mu           sync.Mutex
	running, max int
}

func (s *spinner) Runtime() string { return abi.RuntimeWasm }

func (s *spinner) Invoke(ctx context.Context, _ *abi.Request) (*abi.Response, error) {
	s.mu.Lock()
	s.running++
	s.max = max(s.max, s.running)
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	return &abi.Response{}, abi.ErrTimeout
}

// Issue 9 finding 7: wasm guests running at once are capped at 2 ×
// GOMAXPROCS whatever the concurrency; the rest wait in the queue within
// their wait, then get 503 with Retry-After.
func TestWasmRunningCapped(t *testing.T) {
	inv := &spinner{}
	srv, err := events.New(inv, events.NewConfig().WithFunction("fn").WithRegisterer(prometheus.NewRegistry()).
		WithConcurrency(10000).WithTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	n := 12 * runtime.GOMAXPROCS(0)
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := newRecorder()
			h.ServeHTTP(rec, binaryReq("t", "", ""))
			codes <- rec.Code
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if cap := 2 * runtime.GOMAXPROCS(0); inv.max > cap {
		t.Errorf("%d wasm guests ran at once, want at most %d", inv.max, cap)
	}
	if count[504] == 0 || count[503] == 0 || count[504]+count[503] != n {
		t.Errorf("statuses %v, want 504s (ran) and 503s (waited past the queue wait)", count)
	}
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

// A plain HTTP request whose path decodes to a NUL byte (%00) is a 400
// and never reaches the invoker: PATH_INFO would carry the NUL into the
// guest's environment, which a command's WASI environment and a process's
// execve refuse (a 500) and a reactor's event_env block would split into
// two variables.
func TestPathNULRefused(t *testing.T) {
	f := &recordEnv{}
	srv, err := events.New(f, events.NewConfig().WithFunction("fn").WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, path := range []string{"/a%00b", "/%00CE_ID=forged", "/x/%00"} {
		c := dialSend(t, host(ts.URL), "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
		if code := readStatus(t, c); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d, want 400", path, code)
		}
	}
	if env := f.env(); env != nil {
		t.Errorf("the invoker was called with %q", env)
	}
	// The front door keeps serving, and an escaped NUL in the query
	// string stays escaped (QUERY_STRING is not decoded).
	c := dialSend(t, host(ts.URL), "POST /ok?q=%00 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if code := readStatus(t, c); code != http.StatusOK {
		t.Errorf("POST /ok?q=%%00: %d, want 200", code)
	}
	for _, kv := range f.env() {
		if strings.IndexByte(kv, 0) >= 0 {
			t.Errorf("variable %q has a NUL byte", kv)
		}
	}
}

// recordEnv is an invoker that keeps the environment of its last call.
type recordEnv struct {
	mu   sync.Mutex
	last []string
}

func (*recordEnv) Runtime() string { return abi.RuntimeWasm }

func (f *recordEnv) Invoke(_ context.Context, req *abi.Request) (*abi.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = append([]string(nil), req.Env...)
	return &abi.Response{}, nil
}

func (f *recordEnv) env() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// A structured event's attributes — every member but data and
// data_base64 — are bounded as a binary event's headers are
// (MaxHeaderBytes): one 10 MiB event of 880,000 tiny extension attributes
// took 400 MiB of the host's heap to parse, outside the body budget, and
// became as many variables of the guest's environment. It is a 413 now,
// refused before the members are decoded; large data is not concerned.
func TestStructuredAttributesBounded(t *testing.T) {
	f := &recordEnv{}
	srv, err := events.New(f, events.NewConfig().WithFunction("fn").WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, uint64) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/cloudevents+json")
		rec := httptest.NewRecorder()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		srv.Handler().ServeHTTP(rec, r)
		runtime.ReadMemStats(&after)
		return rec.Code, after.TotalAlloc - before.TotalAlloc
	}
	const head = `{"specversion":"1.0","id":"1","source":"/s","type":"t"`
	var b strings.Builder
	b.WriteString(head)
	for i := 0; b.Len() < 10<<20-100; i++ {
		fmt.Fprintf(&b, `,"x%d":0`, i)
	}
	b.WriteString(`}`)
	if code, alloc := post(b.String()); code != http.StatusRequestEntityTooLarge || alloc > 48<<20 {
		t.Errorf("880,000 extensions: %d, %d MiB allocated; want 413 and at most about the body", code, alloc>>20)
	}
	if env := f.env(); env != nil {
		t.Errorf("the invoker was called with %d variables", len(env))
	}
	// Escaped quotes do not end a string.
	escaped := head + `,"x":"` + strings.Repeat(`\"`, 40<<10) + `"}`
	if code, _ := post(escaped); code != http.StatusRequestEntityTooLarge {
		t.Errorf("an 80 KiB extension: %d, want 413", code)
	}
	// Under the bound, and with large data of every kind, events pass.
	for name, body := range map[string]string{
		"60 KiB of extensions": head + `,"x":"` + strings.Repeat("a", 60<<10) + `"}`,
		"8 MiB of JSON data":   head + `,"data":{"a":[` + strings.Repeat(`"\"}",`, 1<<20) + `1]}}`,
		"8 MiB of base64 data": head + `,"data_base64":"` + strings.Repeat("AAAA", 2<<20) + `"}`,
		"data first":           `{"data":"` + strings.Repeat("b", 1<<20) + `","specversion":"1.0","id":"1","source":"/s","type":"t"}`,
	} {
		if code, _ := post(body); code != http.StatusAccepted {
			t.Errorf("%s: %d, want 202 (no output)", name, code)
		}
	}
}

// bigReply is an invoker whose every reply is n bytes: a small request,
// a large reply.
type bigReply struct{ n int }

func (*bigReply) Runtime() string { return abi.RuntimeWasm }

func (b *bigReply) Invoke(context.Context, *abi.Request) (*abi.Response, error) {
	return &abi.Response{Stdout: make([]byte, b.n)}, nil
}

// Replies a client does not read are held within the body budget and the
// body timeout. Clients asking a function for large replies and reading
// none of them pinned each reply in the host's heap, and their
// connections, for as long as they liked: nothing bounded them. A reply
// now counts against the budget request bodies share until written, an
// event arriving while the budget is spent gets a 503, and a reply not
// taken within the body timeout closes its connection.
func TestUnreadRepliesBounded(t *testing.T) {
	const reply = 16 << 20
	srv, err := events.New(&bigReply{n: reply}, events.NewConfig().WithFunction("fn").
		WithRegisterer(prometheus.NewRegistry()).WithMaxBody(1<<20).WithBodyBudget(8<<20).
		WithBodyTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serving(t, srv, context.Background())
	var unread []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", host(url))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		if _, err := io.WriteString(c, rawHeaders(1)+"x"); err != nil {
			t.Fatal(err)
		}
		unread = append(unread, c)
	}
	// While their replies are held, a new event is refused.
	refused := false
	for deadline := time.Now().Add(10 * time.Second); !refused && time.Now().Before(deadline); {
		resp, err := post(t, http.DefaultClient, url, "t")
		if err != nil {
			t.Fatal(err)
		}
		refused = resp.StatusCode == http.StatusServiceUnavailable
		if resp.StatusCode != http.StatusOK && !refused {
			t.Fatalf("a new event: %d", resp.StatusCode)
		}
		if !refused {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !refused {
		t.Error("new events were admitted while 48 MiB of unread replies were held")
	}
	// Past the body timeout the unread replies' connections are closed,
	// having sent less than the reply (the other clients were refused
	// with a 503), and events are served again.
	time.Sleep(4 * time.Second)
	cut := 0
	for i, c := range unread {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("unread client %d: %v", i, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("unread client %d: its reply was still open 30 s later (%d bytes read)", i, n)
		}
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable:
		case resp.StatusCode == http.StatusOK && n < reply && err != nil:
			cut++
		default:
			t.Errorf("unread client %d: %d, %d bytes, %v; want a 503 or a reply cut short", i, resp.StatusCode, n, err)
		}
	}
	if cut == 0 {
		t.Error("no unread reply was cut short")
	}
	waitFor(t, func() bool {
		resp, err := post(t, http.DefaultClient, url, "t")
		return err == nil && resp.StatusCode == http.StatusOK
	})
}
