package events

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// buckets are the classic buckets of every Nebula histogram, in seconds:
// 10µs to 30s, 1-2.5-5 per decade. A tiny wasm guest runs in tens of
// microseconds, a Go guest in milliseconds, a container starts in hundreds
// of milliseconds: the interesting range spans five decades. Native
// (sparse) buckets with factor 1.1 are exposed alongside.
var buckets = []float64{
	10e-6, 25e-6, 50e-6,
	100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3,
	10e-3, 25e-3, 50e-3,
	100e-3, 250e-3, 500e-3,
	1, 2.5, 5,
	10, 30,
}

func histogramOpts(name, help string) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name:                            name,
		Help:                            help,
		Buckets:                         buckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}
}

// codes whose counters are created up front: every status the front door
// answers an invocation with. Others are created on first use.
var knownCodes = [...]int{200, 202, 400, 405, 408, 413, 415, 500, 503, 504}

type metrics struct {
	invocations *prometheus.CounterVec
	byCode      [len(knownCodes)]prometheus.Counter
	function    string
	runtime     string

	duration, startup, execution *sampledObserver
	inflight, queued             prometheus.Gauge

	compileHit, compileMiss prometheus.Observer
	ready                   prometheus.Gauge
	closedConns             *prometheus.CounterVec

	gatherer prometheus.Gatherer
}

// registry returns where metrics are registered and gathered from: reg,
// or a private registry with the Go and process collectors when reg is
// nil. A reg that cannot gather is read through the default gatherer.
func registry(reg prometheus.Registerer) (prometheus.Registerer, prometheus.Gatherer) {
	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		return r, r
	}
	if g, ok := reg.(prometheus.Gatherer); ok {
		return reg, g
	}
	return reg, prometheus.DefaultGatherer
}

func newMetrics(reg prometheus.Registerer, function, runtime string) (*metrics, error) {
	m := &metrics{function: function, runtime: runtime}
	reg, m.gatherer = registry(reg)
	fr := []string{"function", "runtime"}
	m.invocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nebula_invocations_total",
		Help: "Invocations (events received, probes excluded), by HTTP status code.",
	}, []string{"function", "runtime", "code"})
	duration := prometheus.NewHistogramVec(histogramOpts("nebula_invocation_duration_seconds",
		"Request received to response written."), fr)
	startup := prometheus.NewHistogramVec(histogramOpts("nebula_invocation_startup_seconds",
		"Per-invocation cold start: instantiate (wasm) or spawn until running (process)."), fr)
	execution := prometheus.NewHistogramVec(histogramOpts("nebula_invocation_execution_seconds",
		"Guest run time."), fr)
	inflight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nebula_inflight_invocations",
		Help: "Invocations running now.",
	}, fr)
	queued := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nebula_queue_depth",
		Help: "Requests waiting for a slot.",
	}, []string{"function"})
	compile := prometheus.NewHistogramVec(histogramOpts("nebula_module_compile_seconds",
		"Module compilation at task start, by compilation cache hit or miss."), []string{"function", "cache"})
	ready := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nebula_task_ready_seconds",
		Help: "Time from the shim's Create to the front door being ready.",
	}, fr)
	m.closedConns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nebula_connections_shed_total",
		Help: "Connections closed at the listener's cap: an idle or slow one evicted, or the new one refused.",
	}, []string{"function", "listener"})
	for _, c := range []prometheus.Collector{m.invocations, duration, startup, execution, inflight, queued, compile, ready, m.closedConns} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i, code := range knownCodes {
		m.byCode[i] = m.invocations.WithLabelValues(function, runtime, strconv.Itoa(code))
	}
	m.duration = newSampled(duration.WithLabelValues(function, runtime))
	m.startup = newSampled(startup.WithLabelValues(function, runtime))
	m.execution = newSampled(execution.WithLabelValues(function, runtime))
	m.inflight = inflight.WithLabelValues(function, runtime)
	m.queued = queued.WithLabelValues(function)
	m.compileHit = compile.WithLabelValues(function, "hit")
	m.compileMiss = compile.WithLabelValues(function, "miss")
	m.ready = ready.WithLabelValues(function, runtime)
	return m, nil
}

func (m *metrics) count(code int) {
	for i, c := range knownCodes {
		if c == code {
			m.byCode[i].Inc()
			return
		}
	}
	m.invocations.WithLabelValues(m.function, m.runtime, strconv.Itoa(code)).Inc()
}

// connsClosed is the shed-connections counter of a listener, "events" or
// "metrics".
func (m *metrics) connsClosed(listener string) prometheus.Counter {
	return m.closedConns.WithLabelValues(m.function, listener)
}

// exemplarEvery is the least time between two exemplars of a histogram.
// Prometheus keeps one exemplar per bucket and scrape; making one costs
// several allocations and more than the rest of the front door's work.
const exemplarEvery = 100 * time.Millisecond

// sampledObserver is a histogram that takes an exemplar at most once per
// exemplarEvery.
type sampledObserver struct {
	prometheus.Observer
	last atomic.Int64 // unix nanoseconds of the last exemplar
}

func newSampled(o prometheus.Observer) *sampledObserver { return &sampledObserver{Observer: o} }

// observe records d in o, with the request's trace id as an exemplar when
// it has one and none was taken in the last exemplarEvery (exposed in the
// OpenMetrics format only).
func (m *metrics) observe(o *sampledObserver, d time.Duration, tc *traceContext) {
	if id := tc.traceID(); id != "" {
		last, now := o.last.Load(), time.Now().UnixNano()
		if eo, ok := o.Observer.(prometheus.ExemplarObserver); ok && now-last >= int64(exemplarEvery) && o.last.CompareAndSwap(last, now) {
			eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": id})
			return
		}
	}
	o.Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	h := promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return mux
}
