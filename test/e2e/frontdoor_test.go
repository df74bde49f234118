package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// The front door under hostile clients (issue 10): every attack runs while
// a well-behaved client sends events over its keep-alive connections, as
// queue-proxy does. Its events must all succeed, its p99 stay within 5× of
// its p99 without the attack (measured in the same test, with a floor for
// noise), and the host's peak RSS stay under rssBound. Connection counts
// exceed the container's RLIMIT_NOFILE of 1024 on purpose.
const (
	rssBound     = 256 << 20 // bytes; the limits make it ≈ 60–120 MiB here
	p99Floor     = 20 * time.Millisecond
	goodEvents   = 300             // per phase, at least
	phase        = 2 * time.Second // per phase, at least
	idleConns    = 2000
	attackerConn = 22 // the 2 slots + 20 queued
)

// goodClient sends echo events over two persistent connections.
type goodClient struct {
	url    string
	client *http.Client
	data   []byte
}

func newGoodClient(url string) *goodClient {
	tr := &http.Transport{MaxConnsPerHost: 2, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}
	return &goodClient{url: url, client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		data: bytes.Repeat([]byte("nebula "), 128)}
}

// run sends at least n events, two at a time, for at least minDur, and
// returns their latencies and the failures.
func (g *goodClient) run(n int, minDur time.Duration) (lat []time.Duration, failures []string) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(minDur)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n) || time.Now().Before(end); i = next.Add(1) {
				req, _ := http.NewRequest(http.MethodPost, g.url, bytes.NewReader(g.data))
				req.Header.Set("Ce-Specversion", "1.0")
				req.Header.Set("Ce-Id", "good-"+strconv.FormatInt(i, 10))
				req.Header.Set("Ce-Source", "/e2e/good")
				req.Header.Set("Ce-Type", "good.echo")
				req.Header.Set("Content-Type", "text/plain")
				t0 := time.Now()
				resp, err := g.client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				d := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case resp.StatusCode != 200 || !bytes.Equal(body, g.data):
					failures = append(failures, fmt.Sprintf("status %d, %d bytes", resp.StatusCode, len(body)))
				default:
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, failures
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// conns is an attacker's connections.
type conns struct {
	mu sync.Mutex
	cs []net.Conn
}

func (a *conns) add(c net.Conn) {
	a.mu.Lock()
	a.cs = append(a.cs, c)
	a.mu.Unlock()
}

func (a *conns) closeAll() {
	a.mu.Lock()
	for _, c := range a.cs {
		c.Close()
	}
	a.cs = nil
	a.mu.Unlock()
}

// open dials addr and writes head; a failed dial or write counts as a
// refusal (the front door may reset connections over its cap).
func (a *conns) open(addr, head string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	a.add(c)
	if head != "" {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, head); err != nil {
			return false
		}
	}
	return true
}

// stillOpen counts the connections the server has not closed: a read that
// times out means open.
func (a *conns) stillOpen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.cs {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
		var buf [4096]byte
		for {
			_, err := c.Read(buf[:])
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				n++
				break
			}
			if err != nil {
				break
			}
		}
	}
	return n
}

func ceHead(length int64) string {
	return "POST / HTTP/1.1\r\nHost: fn\r\nCe-Specversion: 1.0\r\nCe-Id: evil\r\nCe-Source: /evil\r\n" +
		"Ce-Type: evil\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.FormatInt(length, 10) + "\r\n\r\n"
}

func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestFrontDoorUnderAttack runs every attack of issue 10 against a wasm
// function through containerd, each while the well-behaved client sends
// its events.
func TestFrontDoorUnderAttack(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, harness.EchoFnWasmImage, "fn-attacked",
		"--annotation", "nebula.dev/concurrency=2", "--annotation", "nebula.dev/max-body=1Ti",
		"--annotation", "nebula.dev/timeout=10s")
	pid := taskPid(t, d, f.ID)
	limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	for _, l := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			t.Logf("host: %s", strings.Join(strings.Fields(l), " "))
		}
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(f.URL, "http://"), "/")
	maddr := strings.TrimSuffix(strings.TrimPrefix(f.Metrics, "http://"), "/metrics")

	good := newGoodClient(f.URL)
	defer good.client.CloseIdleConnections()
	good.run(20, 0) // warm up: connections open, module instantiated once
	var base []time.Duration
	for range 2 {
		lat, failures := good.run(goodEvents, phase)
		if len(failures) > 0 {
			t.Fatalf("baseline: %d failures, first %s", len(failures), failures[0])
		}
		base = append(base, lat...)
	}
	baseP99 := p99(base)
	limit := 5 * max(baseP99, p99Floor)
	t.Logf("baseline: %d events, p99 %v; limit under attack %v", len(base), baseP99, limit)

	// scrapeOK scrapes on a new connection. During a flood younger than a
	// second a new connection may be refused (reset at once): the scraper
	// retries, as Prometheus does at its next interval.
	scrapeOK := func() error {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		var err error
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			var resp *http.Response
			if resp, err = c.Get(f.Metrics); err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("scrape: %d", resp.StatusCode)
			}
			return nil
		}
		return err
	}

	for _, attack := range []struct {
		name string
		// start begins the attack and returns when it is in place; the
		// attack goes on (in goroutines bound to ctx) until ctx is done.
		start func(ctx context.Context, a *conns)
		check func(t *testing.T, a *conns)
	}{
		{name: "header-only requests (finding 1)", start: func(ctx context.Context, a *conns) {
			for range attackerConn {
				a.open(addr, ceHead(10))
			}
		}},
		{name: "declared 10 MiB, reconnecting (finding 2)", start: func(ctx context.Context, a *conns) {
			for range attackerConn {
				a.open(addr, ceHead(10<<20))
			}
			go func() {
				for round := 0; round < 5 && ctx.Err() == nil; round++ {
					time.Sleep(300 * time.Millisecond)
					a.closeAll()
					for range attackerConn {
						a.open(addr, ceHead(10<<20))
					}
				}
			}()
		}},
		{name: "declared 1 TiB with max-body=1Ti (finding 2)", start: func(ctx context.Context, a *conns) {
			for range attackerConn {
				a.open(addr, ceHead(1<<40)+"0123456789")
			}
		}},
		{name: "2000 idle keep-alives on the event port (finding 3)", start: func(ctx context.Context, a *conns) {
			openIdle(a, addr, "GET /healthz HTTP/1.1\r\nHost: fn\r\n\r\n", idleConns)
		}, check: checkShed},
		{name: "2000 idle keep-alives on the metrics port (finding 3)", start: func(ctx context.Context, a *conns) {
			openIdle(a, maddr, "GET /metrics HTTP/1.1\r\nHost: fn\r\n\r\n", idleConns)
		}, check: checkShed},
		{name: "slowloris headers", start: func(ctx context.Context, a *conns) {
			for range 600 {
				a.open(addr, "POST / HTTP/1.1\r\nHost: fn\r\n")
			}
			go func() { // one more header byte a second on each
				for ctx.Err() == nil {
					time.Sleep(time.Second)
					a.mu.Lock()
					for _, c := range a.cs {
						_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
						_, _ = c.Write([]byte("X"))
					}
					a.mu.Unlock()
				}
			}()
		}},
		{name: "slow bodies", start: func(ctx context.Context, a *conns) {
			for range 200 {
				a.open(addr, ceHead(1<<20)+"x")
			}
			go func() { // one more body byte every half second on each
				for ctx.Err() == nil {
					time.Sleep(500 * time.Millisecond)
					a.mu.Lock()
					for _, c := range a.cs {
						_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
						_, _ = c.Write([]byte("x"))
					}
					a.mu.Unlock()
				}
			}()
		}},
		{name: "1 MiB headers", start: func(ctx context.Context, a *conns) {
			big := "POST / HTTP/1.1\r\nHost: fn\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n"
			go func() { // 20 connections every 200 ms
				for ctx.Err() == nil {
					var wg sync.WaitGroup
					for range 20 {
						wg.Add(1)
						go func() { defer wg.Done(); a.open(addr, big) }()
					}
					wg.Wait()
					a.closeAll()
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}},
	} {
		t.Run(attack.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			a := &conns{}
			defer func() { cancel(); a.closeAll() }()
			attack.start(ctx, a)
			lat, failures := good.run(goodEvents, phase)
			if err := scrapeOK(); err != nil {
				t.Errorf("metrics port under attack: %v", err)
			}
			if attack.check != nil {
				attack.check(t, a)
			}
			got := p99(lat)
			t.Logf("%d events, %d failed, p99 %v (baseline %v)", len(lat)+len(failures), len(failures), got, baseP99)
			if len(failures) > 0 {
				t.Fatalf("the well-behaved client failed %d times, first: %s", len(failures), failures[0])
			}
			if got > limit {
				t.Errorf("p99 %v under attack, over 5× max(baseline %v, %v)", got, baseP99, p99Floor)
			}
		})
	}

	hwm := vmHWM(t, pid)
	t.Logf("host peak RSS (VmHWM) %d MiB, bound %d MiB", hwm>>20, rssBound>>20)
	if hwm > rssBound {
		t.Errorf("host peak RSS %d MiB over the bound of %d MiB", hwm>>20, rssBound>>20)
	}
	// A new client gets in once the attack stops, within the second the
	// last attackers' connections take to be closed.
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var resp *http.Response
		if resp, err = http.Get(f.URL + "healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			break
		}
	}
	if err != nil {
		t.Errorf("healthz after the attacks: %v", err)
	}
}

// openIdle opens n keep-alive connections that each make one request and
// stay idle, 50 dials at a time.
func openIdle(a *conns, addr, req string, n int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			a.open(addr, req)
		}()
	}
	wg.Wait()
}

// checkShed: of the 2000 idle connections, those over the cap were closed
// by the front door (evicted or refused), not left to pile up.
func checkShed(t *testing.T, a *conns) {
	open := a.stillOpen()
	t.Logf("%d of %d idle connections still open", open, idleConns)
	if open > 512 {
		t.Errorf("%d idle connections open, over the default cap of 512", open)
	}
}

// TestFunctionDeadlinesUnderLoad (issue 9 finding 7): 900 spinning wasm
// events at concurrency 10000 and a 2 s timeout. At most 2 × GOMAXPROCS
// guests run at once; each that runs gets its 504 close to its deadline,
// the others 503 with Retry-After once their queue wait (the timeout)
// passes. The events go over h2c, whose streams per connection are bounded.
func TestFunctionDeadlinesUnderLoad(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, probeFnWasm, "fn-spin",
		"--annotation", "nebula.dev/concurrency=10000", "--annotation", "nebula.dev/timeout=2s")
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	// 16 connections of at most 100 streams (MaxStreams) carry the 900:
	// without a bound the transport dials one per request until the
	// server's SETTINGS arrive, and beyond the connection cap those are
	// reset.
	client := &http.Client{Transport: &http.Transport{Protocols: &p, MaxConnsPerHost: 16}, Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	const n = 900
	type result struct {
		status     int
		retryAfter string
		ran        time.Duration // client latency minus the queue phase
		served     time.Duration // Server-Timing total minus queue
		guest      time.Duration // start + exec phases
		err        error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, f.URL, nil)
			req.Header.Set("Ce-Specversion", "1.0")
			req.Header.Set("Ce-Id", "spin-"+strconv.Itoa(i))
			req.Header.Set("Ce-Source", "/e2e")
			req.Header.Set("Ce-Type", "probe.loop")
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			total := time.Since(t0)
			queue := serverTimingPhase(resp.Header.Get("Server-Timing"), "queue")
			st := resp.Header.Get("Server-Timing")
			results[i] = result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), ran: total - queue,
				served: serverTimingPhase(st, "total") - queue,
				guest:  serverTimingPhase(st, "start") + serverTimingPhase(st, "exec")}
		}()
	}
	wg.Wait()
	codes := map[int]int{}
	var ran, served, guest []time.Duration
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("request failed: %v", r.err)
		}
		codes[r.status]++
		switch r.status {
		case 504:
			ran = append(ran, r.ran)
			served = append(served, r.served)
			guest = append(guest, r.guest)
		case 503:
			if r.retryAfter == "" {
				t.Errorf("503 without Retry-After")
			}
		default:
			t.Errorf("status %d", r.status)
		}
	}
	got := p99(served)
	t.Logf("statuses %v; 504s, p99: server's total − queue %v, guest (start+exec) %v, client latency − queue %v; timeout 2s",
		codes, got, p99(guest), p99(ran))
	if len(ran) == 0 {
		t.Fatal("no 504: no event ran")
	}
	// Speed is measured, not asserted tightly: the bound is generous
	// against the 9.5 s median the issue found.
	if got > 4*time.Second {
		t.Errorf("504s answered %v after their slot (p99), the timeout being 2s", got)
	}
	if r := send(t, "GET", f.URL+"healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz after: %d", r.status)
	}
}

// serverTimingPhase returns a phase of a Server-Timing value.
func serverTimingPhase(v, name string) time.Duration {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if rest, ok := strings.CutPrefix(part, name+";dur="); ok {
			ms, _ := strconv.ParseFloat(rest, 64)
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	return 0
}

// TestFunctionPlainHTTPAndSpec: through containerd, a plain HTTP POST is an
// invocation with CGI's environment; CloudEvents header values are
// percent-decoded (HTTP binding §3.1.3.2); W3C Trace Context reaches the
// guest and the reply, and the trace id is an exemplar in the OpenMetrics
// scrape; with protocol=cloudevents a plain POST is 415.
func TestFunctionPlainHTTPAndSpec(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, probeFnWasm, "fn-plain")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	r := send(t, "POST", f.URL+"echo?x=1", map[string]string{"Content-Type": "text/plain"}, []byte("plain body"))
	if r.status != 200 || string(r.body) != "plain body" {
		t.Errorf("plain echo: %d %q", r.status, r.body)
	}
	r = send(t, "POST", f.URL+"env?a=b", map[string]string{"X-Tenant": "acme", "Traceparent": tp}, []byte("x"))
	for _, want := range []string{"REQUEST_METHOD=POST", "PATH_INFO=/env", "QUERY_STRING=a=b", "CONTENT_LENGTH=1",
		"HTTP_X_TENANT=acme", "TRACEPARENT=" + tp, "K_SERVICE=" + f.ID} {
		if r.status != 200 || !strings.Contains(string(r.body), want+"\n") {
			t.Errorf("plain env lacks %s: %d\n%s", want, r.status, r.body)
		}
	}
	if r.header.Get("Traceparent") != tp {
		t.Errorf("plain reply traceparent %q", r.header.Get("Traceparent"))
	}

	r = binary(t, f, "env", "caf%C3%A9", nil, map[string]string{"Traceparent": tp})
	if !strings.Contains(string(r.body), "CE_SUBJECT=café\n") || !strings.Contains(string(r.body), "TRACEPARENT="+tp+"\n") {
		t.Errorf("binary env: %d\n%s", r.status, r.body)
	}
	if r = binary(t, f, "env", "%C0%A0", nil, nil); r.status != 400 {
		t.Errorf("overlong percent-encoding: %d, want 400", r.status)
	}

	req, _ := http.NewRequest(http.MethodGet, f.Metrics, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}`) {
		t.Errorf("no trace id exemplar in the OpenMetrics scrape")
	}

	ce := startFunction(t, d, probeFnWasm, "fn-ce-only", "--annotation", "nebula.dev/protocol=cloudevents")
	if r := send(t, "POST", ce.URL, map[string]string{"Content-Type": "text/plain"}, []byte("x")); r.status != 415 {
		t.Errorf("protocol=cloudevents, plain POST: %d, want 415", r.status)
	}
}
