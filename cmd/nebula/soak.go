package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
)

// soakOptions are the flags of `nebula soak`.
type soakOptions struct {
	metrics     string
	count       int
	concurrency int
	eventType   string
	data        string
	interval    time.Duration
	warmup      float64
	maxDrift    float64
	timeout     time.Duration
}

// soakResources are the host's gauges a soak watches, by the names the
// Prometheus Go and process collectors give them.
var soakResources = []struct{ metric, label string }{
	{"process_resident_memory_bytes", "rss"},
	{"process_open_fds", "fds"},
	{"go_goroutines", "goroutines"},
}

func newSoakCommand() *cobra.Command {
	o := soakOptions{}
	cmd := &cobra.Command{
		Use:   "soak URL --metrics URL",
		Short: "Drive a function at saturation and check that its host's resources stay flat",
		Long: `soak sends --count binary-mode CloudEvents to URL over --concurrency
connections, as fast as the function answers, and scrapes the function's
metrics endpoint every --interval for the host's resident memory, open file
descriptors and goroutines.

It fails (exit status 1) if any event was not answered 2xx, or if a
resource drifted by more than --max-drift percent after warm-up: the lowest
value of the last quarter of the samples (the last taken once the load has
stopped) against the lowest of the first quarter of the samples taken after
the first --warmup fraction of the events. The lowest, because each gauge
also counts the requests in flight when it is read: a leak raises the
floor, a busy moment does not.`,
		Example: `  nebula soak http://127.0.0.1:8080/ --metrics http://127.0.0.1:9464/metrics --count 1000000 --concurrency 4`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := checkURL(args[0])
			if err != nil {
				return err
			}
			if o.metrics == "" {
				return errors.New("--metrics is required: the function's metrics URL, e.g. http://127.0.0.1:9464/metrics")
			}
			if _, err := checkURL(o.metrics); err != nil {
				return fmt.Errorf("--metrics: %w", err)
			}
			switch {
			case o.count < 1:
				return fmt.Errorf("--count %d: want at least 1", o.count)
			case o.concurrency < 1:
				return fmt.Errorf("--concurrency %d: want at least 1", o.concurrency)
			case o.interval <= 0:
				return fmt.Errorf("--interval %v: want a positive duration", o.interval)
			case o.warmup < 0 || o.warmup >= 1:
				return fmt.Errorf("--warmup %v: want a fraction in [0, 1)", o.warmup)
			case o.maxDrift <= 0:
				return fmt.Errorf("--max-drift %v: want a positive percentage", o.maxDrift)
			}
			return runSoak(cmd.Context(), cmd.OutOrStdout(), target, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.metrics, "metrics", "", "the function's Prometheus endpoint")
	f.IntVar(&o.count, "count", 100000, "events to send")
	f.IntVar(&o.concurrency, "concurrency", 4, "connections, each sending its events one after another")
	f.StringVar(&o.eventType, "type", "nebula.soak", "the events' type")
	f.StringVar(&o.data, "data", "{}", "the events' data (application/json)")
	f.DurationVar(&o.interval, "interval", 5*time.Second, "how often to scrape the metrics")
	f.Float64Var(&o.warmup, "warmup", 0.1, "fraction of the events before drift is measured")
	f.Float64Var(&o.maxDrift, "max-drift", 10, "largest drift allowed, in percent")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	return cmd
}

// soakSample is one scrape of the host's resources.
type soakSample struct {
	sent   int64
	values map[string]float64
}

func runSoak(ctx context.Context, stdout io.Writer, target string, o soakOptions) error {
	client := newInvokeClient(o.timeout, o.concurrency)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	t := &soakTally{statuses: map[int]int{}}
	start := time.Now()
	done := soakLoad(ctx, client, target, o, t)

	fmt.Fprintf(stdout, "%8s %10s %9s %10s %6s %10s\n", "elapsed", "events", "ev/s", "rss(MiB)", "fds", "goroutines")
	smp := &soakSampler{ctx: ctx, stdout: stdout, scraper: &http.Client{Timeout: 10 * time.Second}, o: o, tally: t,
		start: start, lastAt: start}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	if err := smp.sample(); err != nil {
		return err
	}
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			<-done
			break loop
		case <-tick.C:
			if err := smp.sample(); err != nil {
				cancel()
				<-done
				return err
			}
		}
	}
	elapsed := time.Since(start)
	if err := smp.sample(); err != nil {
		return err
	}
	problems := t.report(stdout, elapsed)
	problems = append(problems, soakJudgeDrift(stdout, smp.samples, o)...)
	if ctx.Err() != nil {
		problems = append(problems, "interrupted")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Fprintln(stdout, "soak passed")
	return nil
}

// soakTally counts the events sent and how they were answered.
type soakTally struct {
	sent     atomic.Int64
	mu       sync.Mutex
	statuses map[int]int
	failures int
	firstErr error
}

func (t *soakTally) record(status int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failures++
		if t.firstErr == nil {
			t.firstErr = err
		}
		return
	}
	t.statuses[status]++
}

// report prints the events' count, rate and statuses, and returns a
// problem when one was not answered 2xx.
func (t *soakTally) report(stdout io.Writer, elapsed time.Duration) (problems []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var answered int
	var b strings.Builder
	for _, code := range slices.Sorted(maps.Keys(t.statuses)) {
		fmt.Fprintf(&b, " %d=%d", code, t.statuses[code])
		answered += t.statuses[code]
	}
	if t.failures > 0 {
		fmt.Fprintf(&b, " error=%d", t.failures)
	}
	total := answered + t.failures
	fmt.Fprintf(stdout, "%d events in %v (%.0f ev/s):%s\n", total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), b.String())
	if bad := total - t.statuses[http.StatusOK] - t.statuses[http.StatusAccepted]; bad > 0 {
		problem := fmt.Sprintf("%d of %d events not answered 2xx", bad, total)
		if t.firstErr != nil {
			problem += fmt.Sprintf(" (first error: %v)", t.firstErr)
		}
		problems = append(problems, problem)
	}
	return problems
}

// soakLoad sends o.count events from o.concurrency workers, recording each
// answer in t; done is closed when they have all returned.
func soakLoad(ctx context.Context, client *http.Client, target string, o soakOptions, t *soakTally) (done <-chan struct{}) {
	var wg sync.WaitGroup
	for c := range o.concurrency {
		wg.Go(func() {
			for {
				i := t.sent.Add(1)
				if i > int64(o.count) || ctx.Err() != nil {
					return
				}
				status, err := soakOne(ctx, client, target, o, fmt.Sprintf("soak-%d-%d", c, i))
				t.record(status, err)
			}
		})
	}
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}

// soakSampler scrapes the function's resources and prints a line per
// sample.
type soakSampler struct {
	ctx      context.Context
	stdout   io.Writer
	scraper  *http.Client
	o        soakOptions
	tally    *soakTally
	start    time.Time
	lastSent int64
	lastAt   time.Time
	samples  []soakSample
}

func (s *soakSampler) sample() error {
	values, err := scrapeResources(s.ctx, s.scraper, s.o.metrics)
	if err != nil {
		return err
	}
	n := min(s.tally.sent.Load(), int64(s.o.count))
	now := time.Now()
	rate := float64(n-s.lastSent) / now.Sub(s.lastAt).Seconds()
	s.lastSent, s.lastAt = n, now
	s.samples = append(s.samples, soakSample{sent: n, values: values})
	fmt.Fprintf(s.stdout, "%8s %10d %9.0f %10.1f %6.0f %10.0f\n", now.Sub(s.start).Round(time.Second), n, rate,
		values["rss"]/(1<<20), values["fds"], values["goroutines"])
	return nil
}

// soakJudgeDrift prints each resource's drift after warm-up and returns a
// problem for each one beyond o.maxDrift.
func soakJudgeDrift(stdout io.Writer, samples []soakSample, o soakOptions) (problems []string) {
	drifts, err := soakDrift(samples, int64(o.warmup*float64(o.count)))
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, r := range soakResources {
		d, ok := drifts[r.label]
		if !ok {
			continue
		}
		fmt.Fprintf(stdout, "drift after warm-up: %-10s %+6.1f%% (%.0f -> %.0f)\n", r.label, d.percent, d.from, d.to)
		if d.percent > o.maxDrift {
			problems = append(problems, fmt.Sprintf("%s grew %.1f%% after warm-up (limit %.0f%%)", r.label, d.percent, o.maxDrift))
		}
	}
	return problems
}

// soakOne sends one binary-mode event and reads the whole reply.
func soakOne(ctx context.Context, client *http.Client, target string, o soakOptions, id string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(o.data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Source", "/nebula/soak")
	req.Header.Set("Ce-Type", o.eventType)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("reading the reply: %w", err)
	}
	return resp.StatusCode, nil
}

// scrapeResources reads the host's resource gauges from a metrics endpoint.
func scrapeResources(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	values := map[string]float64{}
	for _, r := range soakResources {
		mf, ok := families[r.metric]
		if !ok || len(mf.GetMetric()) == 0 {
			return nil, fmt.Errorf("scraping %s: no %s (is it a Nebula function's metrics endpoint?)", url, r.metric)
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			values[r.label] = m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			values[r.label] = m.GetUntyped().GetValue()
		}
	}
	return values, nil
}

// drift is how much a resource grew after warm-up.
type drift struct{ from, to, percent float64 }

// soakDrift compares, for each resource, the lowest value of the last
// quarter of the samples taken after warmup events with the lowest of the
// first quarter of them (see newSoakCommand).
func soakDrift(samples []soakSample, warmup int64) (map[string]drift, error) {
	var after []soakSample
	for _, s := range samples {
		if s.sent >= warmup {
			after = append(after, s)
		}
	}
	if len(after) < 4 {
		return nil, fmt.Errorf("only %d samples after warm-up: too few to judge drift (send more events or lower --interval)", len(after))
	}
	q := len(after) / 4
	out := map[string]drift{}
	for _, r := range soakResources {
		floor := func(ss []soakSample) float64 {
			v := ss[0].values[r.label]
			for _, s := range ss[1:] {
				v = min(v, s.values[r.label])
			}
			return v
		}
		from, to := floor(after[:q]), floor(after[len(after)-q:])
		d := drift{from: from, to: to}
		if from > 0 {
			d.percent = (to - from) / from * 100
		}
		out[r.label] = d
	}
	return out, nil
}
