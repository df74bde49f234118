package events_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"nebula.dev/nebula/events"
)

// scrape GETs /metrics in the text format and parses it.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept", "text/plain;version=0.0.4")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func sumCounter(f *dto.MetricFamily) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		s += m.GetCounter().GetValue()
	}
	return s
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestMetrics(t *testing.T) {
	f := &fake{}
	srv, err := events.New(f, events.NewConfig().WithFunction("fn").WithTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	sent := map[string]int{}
	send := func(r *http.Request, code string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if got := rec.Code; got != atoi(code) {
			t.Fatalf("status %d, want %s", got, code)
		}
		sent[code]++
	}
	for range 3 {
		send(binaryReq("t", "text/plain", "x"), "200")
	}
	send(binaryReq("silent", "", ""), "202")
	send(binaryReq("t", "", "", "Ce-Id", ""), "400")
	send(structuredReq(`{`), "400")
	batch := structuredReq(`[]`)
	batch.Header.Set("Content-Type", "application/cloudevents-batch+json")
	send(batch, "415")
	send(httptest.NewRequest(http.MethodGet, "/", nil), "405")
	send(binaryReq("exit3", "", ""), "500")
	send(binaryReq("sleep", "", ""), "504")
	// Not invocations: health, probes, OPTIONS.
	send(httptest.NewRequest(http.MethodGet, "/healthz", nil), "200")
	sent["200"]--
	send(httptest.NewRequest(http.MethodOptions, "/", nil), "200")
	sent["200"]--
	srv.ObserveCompile(3*time.Millisecond, false)
	srv.ObserveCompile(200*time.Microsecond, true)
	srv.SetTaskReady(42 * time.Millisecond)

	fams := scrape(t, srv.MetricsHandler())
	inv := fams["nebula_invocations_total"]
	if inv == nil {
		t.Fatal("no nebula_invocations_total")
	}
	got := map[string]int{}
	total := 0
	for _, m := range inv.GetMetric() {
		if label(m, "function") != "fn" || label(m, "runtime") != "wasm" {
			t.Errorf("labels %v", m.GetLabel())
		}
		if v := int(m.GetCounter().GetValue()); v > 0 {
			got[label(m, "code")] = v
			total += v
		}
	}
	for code, n := range sent {
		if got[code] != n {
			t.Errorf("code %s: counted %d, sent %d", code, got[code], n)
		}
	}
	if len(got) != len(sent) {
		t.Errorf("counted %v, sent %v", got, sent)
	}

	hist := func(name string) *dto.Histogram {
		t.Helper()
		f := fams[name]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("no histogram %s", name)
		}
		return f.GetMetric()[0].GetHistogram()
	}
	if c := hist("nebula_invocation_duration_seconds").GetSampleCount(); int(c) != total {
		t.Errorf("duration count %d, want %d", c, total)
	}
	ran := sent["200"] + sent["202"] + sent["500"] + sent["504"]
	for _, name := range []string{"nebula_invocation_startup_seconds", "nebula_invocation_execution_seconds"} {
		h := hist(name)
		if int(h.GetSampleCount()) != ran {
			t.Errorf("%s count %d, want %d", name, h.GetSampleCount(), ran)
		}
		b := h.GetBucket()
		// 10µs to 30s, 1-2.5-5 per decade, then +Inf.
		if len(b) != 21 || b[0].GetUpperBound() != 10e-6 || b[len(b)-2].GetUpperBound() != 30 {
			t.Errorf("%s buckets %v", name, b)
		}
	}
	// The fake's startup is 20µs: in the (10µs, 25µs] bucket.
	if b := hist("nebula_invocation_startup_seconds").GetBucket(); b[0].GetCumulativeCount() != 0 || int(b[1].GetCumulativeCount()) != ran {
		t.Errorf("startup buckets %v", b)
	}
	if c := hist("nebula_module_compile_seconds").GetSampleCount(); c != 1 {
		t.Errorf("compile: %d samples per cache label, want 1", c)
	}
	if len(fams["nebula_module_compile_seconds"].GetMetric()) != 2 {
		t.Errorf("compile: want hit and miss series")
	}
	for name, want := range map[string]float64{
		"nebula_task_ready_seconds":   0.042,
		"nebula_inflight_invocations": 0,
		"nebula_queue_depth":          0,
	} {
		f := fams[name]
		if f == nil || f.GetMetric()[0].GetGauge().GetValue() != want {
			t.Errorf("%s = %v, want %v", name, f, want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("no %s: Go and process collectors missing", name)
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestMetricsNegotiation checks that OpenMetrics text and protobuf (with
// native histograms) are offered.
func TestMetricsNegotiation(t *testing.T) {
	h := newHarness(t, events.NewConfig())
	h.do(binaryReq("t", "text/plain", "x"))
	mh := h.srv.MetricsHandler()

	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	rec := httptest.NewRecorder()
	mh.ServeHTTP(rec, r)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("OpenMetrics not negotiated: %q", ct)
	}

	r = httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	rec = httptest.NewRecorder()
	mh.ServeHTTP(rec, r)
	ct := expfmt.ResponseFormat(rec.Result().Header)
	if ct.FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("protobuf not negotiated: %q", rec.Header().Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(rec.Body, ct)
	found := false
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if mf.GetName() == "nebula_invocation_execution_seconds" {
			hist := mf.GetMetric()[0].GetHistogram()
			if hist.Schema == nil || len(hist.GetPositiveSpan()) == 0 || len(hist.GetBucket()) == 0 {
				t.Errorf("want native and classic buckets, got %v", hist)
			}
			found = true
		}
	}
	if !found {
		t.Error("no nebula_invocation_execution_seconds in protobuf")
	}

	rec = httptest.NewRecorder()
	mh.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/other on the metrics port: %d", rec.Code)
	}
}
