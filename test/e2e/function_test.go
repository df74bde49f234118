package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"nebula.dev/nebula/test/harness"
)

type function = harness.Function

func startFunction(t testing.TB, d *harness.Daemon, image, id string, extra ...string) function {
	t.Helper()
	return harness.StartFunction(t, d, image, id, extra...)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func send(t *testing.T, method, url string, header map[string]string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// binary sends a binary-mode CloudEvent of type probe.<command>.
func binary(t *testing.T, f function, command, subject string, data []byte, ext map[string]string) reply {
	h := map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": "id-" + command, "Ce-Source": "/e2e",
		"Ce-Type": "probe." + command, "Content-Type": "text/plain",
	}
	if subject != "" {
		h["Ce-Subject"] = subject
	}
	for k, v := range ext {
		h["Ce-"+k] = v
	}
	return send(t, "POST", f.URL, h, data)
}

var serverTiming = regexp.MustCompile(`^start;dur=\d+\.\d{3}, exec;dur=\d+\.\d{3}|(^|, )total;dur=\d+\.\d{3}`)

// TestFunction drives the function ABI end to end through containerd, for
// a wasm instance per event and a process per event.
func TestFunction(t *testing.T) {
	d := startWithProbe(t)
	// A wasm instance's memory is limited by the memory-limit knob; a
	// process's by the container's cgroup, which the kernel enforces.
	// The reactor build (package guest) must behave exactly as the command.
	for _, rt := range []struct {
		name, image, runtime string
		limit                []string
	}{
		{"wasm", probeFnWasm, "wasm", []string{"--annotation", "nebula.dev/memory-limit=64Mi"}},
		{"reactor", probeReactor, "wasm", []string{"--annotation", "nebula.dev/memory-limit=64Mi"}},
		{"process", probeFnNative, "process", []string{"--memory-limit", strconv.Itoa(256 << 20)}},
	} {
		t.Run(rt.name, func(t *testing.T) {
			f := startFunction(t, d, rt.image, "fn-"+rt.name, append(rt.limit,
				"--annotation", "nebula.dev/timeout=2s", "--annotation", "nebula.dev/max-body=64Ki")...)
			codes := map[int]int{}
			count := func(r reply) reply { codes[r.status]++; return r }

			// Binary in, binary reply out.
			r := count(binary(t, f, "echo", "", []byte("hello, nebula"), nil))
			if r.status != 200 || string(r.body) != "hello, nebula" {
				t.Fatalf("binary echo: %d %q", r.status, r.body)
			}
			if r.header.Get("Ce-Type") != "probe.echo.reply" || r.header.Get("Ce-Source") != "/nebula/"+f.ID ||
				r.header.Get("Ce-Id") == "" || r.header.Get("Ce-Id") == "id-echo" || r.header.Get("Ce-Specversion") != "1.0" {
				t.Errorf("binary reply attributes: %v", r.header)
			}
			if !serverTiming.MatchString(r.header.Get("Server-Timing")) {
				t.Errorf("Server-Timing %q", r.header.Get("Server-Timing"))
			}

			// Structured in, structured out; JSON data reaches stdin as its
			// JSON text, data_base64 as the decoded bytes.
			ev := `{"specversion":"1.0","id":"s1","source":"/e2e","type":"probe.echo","datacontenttype":"application/json","data":{"a":[1,2]}}`
			r = count(send(t, "POST", f.URL, map[string]string{"Content-Type": "application/cloudevents+json"}, []byte(ev)))
			var got map[string]any
			if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
				t.Fatalf("structured echo: %d %q", r.status, r.body)
			}
			if !strings.HasPrefix(r.header.Get("Content-Type"), "application/cloudevents+json") || got["type"] != "probe.echo.reply" {
				t.Errorf("structured reply: %s %q", r.header.Get("Content-Type"), r.body)
			}
			if data, _ := json.Marshal(got["data"]); string(data) != `{"a":[1,2]}` {
				t.Errorf("JSON data round trip: %s", data)
			}
			raw := []byte{0, 1, 2, 0xff, 'x'}
			ev = `{"specversion":"1.0","id":"s2","source":"/e2e","type":"probe.echo","datacontenttype":"application/octet-stream","data_base64":"` + base64.StdEncoding.EncodeToString(raw) + `"}`
			r = count(send(t, "POST", f.URL, map[string]string{"Content-Type": "application/cloudevents+json"}, []byte(ev)))
			got = nil
			json.Unmarshal(r.body, &got)
			if b, _ := base64.StdEncoding.DecodeString(fmt.Sprint(got["data_base64"])); r.status != 200 || !bytes.Equal(b, raw) {
				t.Errorf("data_base64 round trip: %d %q", r.status, r.body)
			}

			// The environment: CE_* attributes and extensions, the task's
			// env (PORT, K_SERVICE, user env).
			r = count(binary(t, f, "env", "subj", nil, map[string]string{"Myext": "v1", "Time": "2026-01-02T03:04:05Z"}))
			for _, want := range []string{"CE_SPECVERSION=1.0", "CE_ID=id-env", "CE_SOURCE=/e2e", "CE_TYPE=probe.env",
				"CE_SUBJECT=subj", "CE_TIME=2026-01-02T03:04:05Z", "CE_MYEXT=v1", "CE_DATACONTENTTYPE=text/plain",
				"K_SERVICE=" + f.ID, "FOO=bar", "PORT="} {
				if !strings.Contains(string(r.body), want) {
					t.Errorf("env lacks %s:\n%s", want, r.body)
				}
			}

			// No state survives an invocation; /tmp is writable.
			for i := 0; i < 3; i++ {
				if r = count(binary(t, f, "counter", "", nil, nil)); string(r.body) != "1\n" {
					t.Errorf("counter event %d replied %q, want 1", i, r.body)
				}
			}
			if r = count(binary(t, f, "writetmp", "", nil, nil)); r.status != 200 || string(r.body) != "written by probe\n" {
				t.Errorf("writetmp: %d %q", r.status, r.body)
			}
			if r = count(binary(t, f, "empty", "", nil, nil)); r.status != 202 || len(r.body) != 0 {
				t.Errorf("empty stdout: %d %q, want 202 and no body", r.status, r.body)
			}

			// Every error status of the design.
			for _, tc := range []struct {
				name string
				r    func() reply
				want int
			}{
				{"exit 3", func() reply { return binary(t, f, "exit", "3", nil, nil) }, 500},
				{"timeout", func() reply { return binary(t, f, "loop", "", nil, nil) }, 504},
				{"served after a timeout", func() reply { return binary(t, f, "echo", "", []byte("ok"), nil) }, 200},
				{"memory bomb", func() reply { return binary(t, f, "membomb", "", nil, nil) }, 500},
				{"stdout flood", func() reply { return binary(t, f, "flood", "", nil, nil) }, 500},
				{"malformed", func() reply {
					return send(t, "POST", f.URL, map[string]string{"Content-Type": "application/cloudevents+json"}, []byte(`{"specversion":`))
				}, 400},
				{"missing id", func() reply {
					return send(t, "POST", f.URL, map[string]string{"Ce-Specversion": "1.0", "Ce-Source": "/e2e", "Ce-Type": "probe.echo"}, nil)
				}, 400},
				{"batch", func() reply {
					return send(t, "POST", f.URL, map[string]string{"Content-Type": "application/cloudevents-batch+json"}, []byte(`[]`))
				}, 415},
				{"batch, structured", func() reply {
					return send(t, "POST", f.URL, map[string]string{"Content-Type": "application/cloudevents-batch+json"}, []byte(`[{}]`))
				}, 415},
				{"not a CloudEvent: a plain HTTP invocation", func() reply {
					return send(t, "POST", f.URL, map[string]string{"Content-Type": "text/plain"}, []byte("hi"))
				}, 200},
				{"too big", func() reply { return binary(t, f, "echo", "", bytes.Repeat([]byte("x"), 65<<10), nil) }, 413},
			} {
				r := count(tc.r())
				if r.status != tc.want {
					t.Errorf("%s: status %d, want %d (%q)", tc.name, r.status, tc.want, r.body)
				}
				if r.header.Get("Server-Timing") == "" {
					t.Errorf("%s: no Server-Timing header", tc.name)
				}
			}
			if r := send(t, "GET", f.URL, nil, nil); r.status != 405 || r.header.Get("Allow") != "POST" {
				t.Errorf("GET /: %d, Allow %q; want 405 and Allow: POST", r.status, r.header.Get("Allow"))
			} else {
				codes[405]++
			}

			// Probes are answered and not counted.
			for _, h := range []map[string]string{{"User-Agent": "kube-probe/1.31"}, {"K-Network-Probe": "probe"}} {
				if r := send(t, "GET", f.URL+"health/readiness", h, nil); r.status != 200 {
					t.Errorf("probe %v: %d", h, r.status)
				}
			}

			// /metrics counts exactly what was sent, per status code.
			fams := scrape(t, f.Metrics)
			for code, n := range codes {
				if got := counter(fams, "nebula_invocations_total", map[string]string{"function": f.ID, "runtime": rt.runtime, "code": strconv.Itoa(code)}); got != float64(n) {
					t.Errorf("nebula_invocations_total{code=%d} = %v, want %d", code, got, n)
				}
			}
			for _, h := range []string{"nebula_invocation_duration_seconds", "nebula_invocation_startup_seconds", "nebula_invocation_execution_seconds"} {
				if n := histogramCount(fams, h, f.ID); n == 0 {
					t.Errorf("%s has no observations", h)
				}
			}
			if rt.runtime == "wasm" && histogramCount(fams, "nebula_module_compile_seconds", f.ID) != 1 {
				t.Errorf("nebula_module_compile_seconds: want one observation")
			}
			if fams["nebula_task_ready_seconds"] == nil {
				t.Errorf("no nebula_task_ready_seconds")
			}
		})
	}
}

// TestFunctionOverload: beyond the slots and the queue, 503 with
// Retry-After; never an unbounded pile-up.
func TestFunctionOverload(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, probeFnWasm, "fn-overload", "--annotation", "nebula.dev/concurrency=1")
	const n = 16 // 1 slot + a queue of 10
	var wg sync.WaitGroup
	results := make([]reply, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = binary(t, f, "sleep", "300ms", nil, nil)
		}(i)
	}
	wg.Wait()
	var ok, busy int
	for _, r := range results {
		switch r.status {
		case 200:
			ok++
		case 503:
			busy++
			if r.header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
		default:
			t.Errorf("status %d (%q)", r.status, r.body)
		}
	}
	if busy == 0 || ok == 0 {
		t.Errorf("%d events to 1 slot + 10 queued: %d served, %d refused; want both", n, ok, busy)
	}
}

// TestFunctionTrap: a module that traps gets 500, and the function keeps
// serving.
func TestFunctionTrap(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, harness.TrapFnWasmImage, "fn-trap")
	for i := 0; i < 2; i++ {
		if r := binary(t, f, "x", "", nil, nil); r.status != 500 {
			t.Errorf("trap %d: status %d, want 500", i, r.status)
		}
	}
}

// TestFunctionStartSpins: a module whose start function (which runs at
// instantiation, before `_start`) spins is stopped at the event's
// deadline like any guest: 504, more times than the function has slots,
// and the next event is served.
func TestFunctionStartSpins(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, harness.StartSpinFnWasmImage, "fn-startspin",
		"--annotation", "nebula.dev/timeout=1s", "--annotation", "nebula.dev/concurrency=1")
	for i := 0; i < 3; i++ {
		if r := binary(t, f, "x", "", []byte("spin"), nil); r.status != http.StatusGatewayTimeout {
			t.Fatalf("spinning start function %d: status %d %q, want 504", i, r.status, r.body)
		}
	}
	if r := binary(t, f, "x", "", []byte("go"), nil); r.status != 200 || string(r.body) != "ok" {
		t.Fatalf("after the spins: %d %q, want 200 ok", r.status, r.body)
	}
}

// TestFunctionFileHog: a guest that opens files until refused and holds
// them until its deadline gets its refusal, while the front door, which
// shares the host's RLIMIT_NOFILE (containerd's 1024), still accepts new
// keep-alive connections, as many as its cap. Before the guests' files
// were limited, the guest took all but one descriptor: one new
// connection was accepted, and while it stayed open (keep-alive, as
// queue-proxy's do) no other until the guest's deadline.
func TestFunctionFileHog(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, harness.MemhogFnWasmImage, "fn-filehog",
		"--annotation", "nebula.dev/timeout=15s", "--annotation", "nebula.dev/concurrency=2")
	hog := make(chan int, 1)
	go func() {
		code := 0
		client := &http.Client{Timeout: 60 * time.Second}
		if resp, err := client.Post(f.URL, "text/plain", strings.NewReader("f")); err == nil {
			resp.Body.Close()
			code = resp.StatusCode
		}
		hog <- code
	}()
	time.Sleep(2 * time.Second) // the guest takes what it can, then holds it
	host := strings.TrimPrefix(f.URL, "http://")
	host, _, _ = strings.Cut(host, "/")
	for i := range 8 { // each connection stays open
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d, opened while the guest holds its files: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Fatalf("connection %d: %d %q, want 200 ok", i, resp.StatusCode, body)
		}
	}
	if code := <-hog; code != http.StatusGatewayTimeout {
		t.Errorf("the guest holding files: %d, want 504", code)
	}
}

// TestFunctionDrain: SIGTERM lets in-flight invocations finish, refuses
// new ones, and the task exits 0.
func TestFunctionDrain(t *testing.T) {
	d := startWithProbe(t)
	f := startFunction(t, d, probeFnWasm, "fn-drain")
	inflight := make(chan reply, 1)
	go func() { inflight <- binary(t, f, "sleep", "1s", nil, nil) }()
	time.Sleep(300 * time.Millisecond) // let the event reach the guest
	d.MustCtr(t, "task", "kill", "-s", "SIGTERM", f.ID)
	if st := waitExit(t, d, f.ID); st != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", st)
	}
	if r := <-inflight; r.status != 200 || string(r.body) != "slept\n" {
		t.Errorf("in-flight invocation: %d %q, want 200 slept", r.status, r.body)
	}
	if _, err := http.Post(f.URL, "text/plain", strings.NewReader("x")); err == nil {
		t.Errorf("a new event was accepted after the drain")
	}
	d.MustCtr(t, "task", "rm", f.ID)
	d.MustCtr(t, "container", "rm", f.ID)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func counter(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, m := range fams[name].GetMetric() {
		if matches(m, labels) {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func histogramCount(fams map[string]*dto.MetricFamily, name, function string) uint64 {
	var n uint64
	for _, m := range fams[name].GetMetric() {
		if matches(m, map[string]string{"function": function}) {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}
