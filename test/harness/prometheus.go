package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A real Prometheus server, a host process on loopback, built from its Go
// module by hack/install-prometheus.sh.
//
//	p := harness.StartPrometheus(t, config) // prometheus.yml's text
//	samples := p.MustQuery(t, `sum(rate(nebula_invocations_total[1m]))`)
//
// When the test ends it is stopped (SIGTERM) and its directory removed;
// the test fails if it does not stop.

// DefaultPrometheusVersion is the Prometheus module version tests run
// unless NEBULA_PROMETHEUS_VERSION says otherwise.
const DefaultPrometheusVersion = "v0.316.0"

// PrometheusVersion is the Prometheus module version under test.
func PrometheusVersion() string {
	if v := os.Getenv("NEBULA_PROMETHEUS_VERSION"); v != "" {
		return v
	}
	return DefaultPrometheusVersion
}

// PrometheusBinary is where hack/install-prometheus.sh put the server:
// $NEBULA_PROMETHEUS_DIR/bin/prometheus, by default
// /var/cache/nebula/prometheus-VERSION/bin/prometheus.
func PrometheusBinary() string {
	dir := os.Getenv("NEBULA_PROMETHEUS_DIR")
	if dir == "" {
		dir = "/var/cache/nebula/prometheus-" + PrometheusVersion()
	}
	return filepath.Join(dir, "bin", "prometheus")
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	// URL is its HTTP API's base, http://127.0.0.1:PORT.
	URL string
	// Dir holds its config, its TSDB and its log.
	Dir string

	cmd  *exec.Cmd
	done chan struct{}
}

// StartPrometheus runs Prometheus with config (prometheus.yml's text) on a
// free loopback port, its TSDB in a directory of its own, and returns once
// it is ready. extraArgs are added to its command line.
func StartPrometheus(t T, config string, extraArgs ...string) *Prometheus {
	t.Helper()
	bin := PrometheusBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("prometheus %s is not installed (%v): run hack/install-prometheus.sh", PrometheusVersion(), err)
	}
	dir, err := os.MkdirTemp("", "nbprom-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer logf.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	args := append([]string{"--config.file", cfg, "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", addr, "--log.level", "info"}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	p := &Prometheus{URL: "http://" + addr, Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })

	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := promClient.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("prometheus exited:\n%s", p.Log(30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 2m (%v):\n%s", err, p.Log(30))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// promClient talks to the server on loopback only: no proxy from the
// environment, bounded in time.
var promClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}

// Log returns the last n lines of the server's log.
func (p *Prometheus) Log(n int) string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "prometheus.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *Prometheus) stop(t T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("prometheus did not exit within 30 s of SIGTERM; killing it")
		p.cmd.Process.Kill()
		<-p.done
	}
	if t.Failed() {
		t.Logf("prometheus log (tail):\n%s", p.Log(30))
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		t.Errorf("removing %s: %v", p.Dir, err)
	}
}

// Sample is one series of an instant query's answer: a float, or a native
// histogram (Histogram non-nil, its count and sum).
type Sample struct {
	Metric    map[string]string
	Value     float64
	Histogram *struct {
		Count string `json:"count"`
		Sum   string `json:"sum"`
	}
}

// Query evaluates expr at the current time through the HTTP API
// (/api/v1/query).
func (p *Prometheus) Query(expr string) ([]Sample, error) {
	resp, err := promClient.Get(p.URL + "/api/v1/query?" + url.Values{"query": {expr}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric    map[string]string `json:"metric"`
				Value     []any             `json:"value"`
				Histogram []json.RawMessage `json:"histogram"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %q: %d %s: %w", expr, resp.StatusCode, body, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, r.Data.ResultType)
	}
	var out []Sample
	for _, s := range r.Data.Result {
		sample := Sample{Metric: s.Metric}
		switch {
		case len(s.Value) == 2:
			str, _ := s.Value[1].(string)
			if sample.Value, err = strconv.ParseFloat(str, 64); err != nil {
				return nil, fmt.Errorf("query %q: value %v: %w", expr, s.Value, err)
			}
		case len(s.Histogram) == 2:
			if err := json.Unmarshal(s.Histogram[1], &sample.Histogram); err != nil {
				return nil, fmt.Errorf("query %q: histogram %s: %w", expr, s.Histogram[1], err)
			}
		default:
			return nil, fmt.Errorf("query %q: sample %+v has neither value nor histogram", expr, s)
		}
		out = append(out, sample)
	}
	return out, nil
}

// MustQuery is Query, failing t on an error.
func (p *Prometheus) MustQuery(t T, expr string) []Sample {
	t.Helper()
	s, err := p.Query(expr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

// Target is one of the server's active scrape targets.
type Target struct {
	Labels     map[string]string `json:"labels"`
	ScrapePool string            `json:"scrapePool"`
	ScrapeURL  string            `json:"scrapeUrl"`
	Health     string            `json:"health"`
	LastError  string            `json:"lastError"`
}

// Targets returns the server's active targets (/api/v1/targets).
func (p *Prometheus) Targets() ([]Target, error) {
	resp, err := promClient.Get(p.URL + "/api/v1/targets?state=active")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ActiveTargets []Target `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("targets: status %s", r.Status)
	}
	return r.Data.ActiveTargets, nil
}
