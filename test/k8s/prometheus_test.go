//go:build k8s

package k8s

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"nebula.dev/nebula/test/harness"
)

// scrapeInterval replaces the PodMonitor's 15 s, so that the test waits
// seconds, not minutes, for the scrapes around its events.
const scrapeInterval = "2s"

// scrapeConfig renders the PodMonitor m as the Prometheus Operator would:
// a scrape job discovering pods through the API server (kubeconfig), the
// selector and the namespace selector as relabelling, then the endpoint's
// own relabelling, with native histograms scraped.
func scrapeConfig(t *testing.T, m podMonitor, kubeconfig string) string {
	ep := m.Spec.PodMetricsEndpoints[0]
	sd := map[string]any{"role": "pod", "kubeconfig_file": kubeconfig}
	if !m.Spec.NamespaceSelector.Any {
		names := m.Spec.NamespaceSelector.MatchNames
		if len(names) == 0 {
			names = []string{m.Metadata.Namespace}
		}
		sd["namespaces"] = map[string]any{"names": names}
	}
	var relabel []map[string]any
	for k, v := range m.Spec.Selector.MatchLabels {
		relabel = append(relabel, map[string]any{"action": "keep",
			"source_labels": []string{"__meta_kubernetes_pod_label_" + sanitize(k), "__meta_kubernetes_pod_labelpresent_" + sanitize(k)},
			"regex":         "(" + regexp.QuoteMeta(v) + ");true"})
	}
	for _, e := range m.Spec.Selector.MatchExpressions {
		present := "__meta_kubernetes_pod_labelpresent_" + sanitize(e.Key)
		switch e.Operator {
		case "Exists":
			relabel = append(relabel, map[string]any{"action": "keep", "source_labels": []string{present}, "regex": "true"})
		default:
			t.Fatalf("the PodMonitor's selector operator %q is not rendered here", e.Operator)
		}
	}
	if ep.Port != "" {
		relabel = append(relabel, map[string]any{"action": "keep", "source_labels": []string{"__meta_kubernetes_pod_container_port_name"}, "regex": ep.Port})
	}
	for _, r := range ep.Relabelings {
		c := map[string]any{"action": strings.ToLower(r.Action)}
		if len(r.SourceLabels) > 0 {
			c["source_labels"] = r.SourceLabels
		}
		if r.Separator != "" {
			c["separator"] = r.Separator
		}
		if r.Regex != "" {
			c["regex"] = r.Regex
		}
		if r.TargetLabel != "" {
			c["target_label"] = r.TargetLabel
		}
		if r.Replacement != nil {
			c["replacement"] = *r.Replacement
		}
		if r.Modulus != 0 {
			c["modulus"] = r.Modulus
		}
		relabel = append(relabel, c)
	}
	cfg := map[string]any{
		"global": map[string]any{"scrape_interval": scrapeInterval, "scrape_native_histograms": true},
		"scrape_configs": []any{map[string]any{
			"job_name":                 fmt.Sprintf("podMonitor/%s/%s/0", m.Metadata.Namespace, m.Metadata.Name),
			"scrape_interval":          scrapeInterval,
			"scrape_timeout":           scrapeInterval,
			"metrics_path":             ep.Path,
			"scrape_native_histograms": true,
			"kubernetes_sd_configs":    []any{sd},
			"relabel_configs":          relabel,
		}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var notLabelChar = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// sanitize makes a Kubernetes label name a Prometheus label name suffix,
// as kubernetes_sd_configs does.
func sanitize(name string) string { return notLabelChar.ReplaceAllString(name, "_") }

// testPrometheus: a real Prometheus (hack/install-prometheus.sh) discovers
// the function pod through the API server with the stored PodMonitor's
// selector and relabelling, scrapes it with native histograms on (and
// only those: the classic _bucket, _sum and _count series do not exist),
// and after the test's events every query of
// deploy/grafana/nebula-dashboard.json answers for the function, counts
// exactly the events sent.
func testPrometheus(t *testing.T, k *harness.Cluster, pod string) {
	m := storedPodMonitor(t, k)
	config := scrapeConfig(t, m, k.Kubeconfig)
	t.Logf("prometheus.yml, from the stored PodMonitor:\n%s", config)
	p := harness.StartPrometheus(t, config, "--enable-feature=created-timestamp-zero-ingestion")

	ip := strings.TrimSpace(kubectl(t, k, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	wantURL := "http://" + net.JoinHostPort(ip, "9464") + "/metrics"
	k.WaitFor(t, "Prometheus to discover and scrape the function pod", 2*time.Minute, func() (bool, string) {
		targets, err := p.Targets()
		if err != nil {
			return false, err.Error()
		}
		return len(targets) == 1 && targets[0].ScrapeURL == wantURL && targets[0].Health == "up", fmt.Sprintf("%+v", targets)
	})
	targets, _ := p.Targets()
	t.Logf("Prometheus's target: %+v", targets[0])
	// One scrape before the events, so that rates see them arrive.
	k.WaitFor(t, "a scrape of the function's metrics", time.Minute, func() (bool, string) {
		s, err := p.Query(`nebula_task_ready_seconds{function="metered"}`)
		return err == nil && len(s) > 0, fmt.Sprint(s, err)
	})

	const ok, failed = 20, 2
	url := "http://" + net.JoinHostPort(ip, "8080") + "/"
	for i := range ok {
		if r, err := postEvent(url, fmt.Sprint("prom-", i), "probe.echo", "", "counted"); err != nil || r.status != 200 {
			t.Fatalf("event %d: %v %d %q", i, err, r.status, r.body)
		}
	}
	for i := range failed {
		if r, err := postEvent(url, fmt.Sprint("prom-fail-", i), "probe.exit", "3", ""); err != nil || r.status != 500 {
			t.Fatalf("failing event %d: %v %d %q", i, err, r.status, r.body)
		}
	}
	k.WaitFor(t, "Prometheus to count the events", time.Minute, func() (bool, string) {
		s, err := p.Query(`sum(nebula_invocations_total{function="metered"})`)
		return err == nil && len(s) == 1 && s[0].Value == ok+failed, fmt.Sprint(s, err)
	})
	// And one more scrape, so that every rate window holds the increase.
	time.Sleep(5 * time.Second)

	// Exact counts: by status, and the native histogram's count.
	for expr, want := range map[string]float64{
		`sum(nebula_invocations_total{function="metered",code="200"})`:                 ok,
		`sum(nebula_invocations_total{function="metered",code="500"})`:                 failed,
		`histogram_count(sum(nebula_invocation_duration_seconds{function="metered"}))`: ok + failed,
		`histogram_count(sum(nebula_invocation_startup_seconds{function="metered"}))`:  ok + failed,
	} {
		s := p.MustQuery(t, expr)
		if len(s) != 1 || s[0].Value != want {
			t.Errorf("%s = %+v, want %v", expr, s, want)
		}
	}
	// Native histograms only: no classic series, so the old mean query
	// (_sum / _count) had nothing to show.
	for _, expr := range []string{
		`nebula_invocation_duration_seconds_count{function="metered"}`,
		`nebula_invocation_startup_seconds_bucket{function="metered"}`,
		`sum by (runtime) (rate(nebula_invocation_startup_seconds_sum{function=~"metered"}[2m])) / sum by (runtime) (rate(nebula_invocation_startup_seconds_count{function=~"metered"}[2m]))`,
	} {
		if s := p.MustQuery(t, expr); len(s) != 0 {
			t.Errorf("%s = %+v, want nothing (native histograms only)", expr, s)
		}
	}

	// Every query of the dashboard, as Grafana would send it for this
	// function over the last two minutes.
	for _, q := range dashboardQueries(t) {
		expr := strings.NewReplacer(`"$function"`, `"metered"`, "$__rate_interval", "2m").Replace(q.expr)
		if m := regexp.MustCompile(`^label_values\((\w+), (\w+)\)$`).FindStringSubmatch(expr); m != nil {
			expr = "group by (" + m[2] + ") (" + m[1] + ")"
		}
		s := p.MustQuery(t, expr)
		var values []string
		finite, good := 0, len(s) > 0
		for _, sample := range s {
			values = append(values, fmt.Sprintf("%v=%g", sample.Metric, sample.Value))
			switch {
			case sample.Histogram == nil && !math.IsNaN(sample.Value) && !math.IsInf(sample.Value, 0):
				finite++
			// The module was compiled once, a cache hit or a miss: the
			// other outcome's histogram has no observation, hence no
			// quantile (NaN).
			case math.IsNaN(sample.Value) && sample.Metric["cache"] != "":
			default:
				good = false
			}
		}
		good = good && finite > 0
		t.Logf("%s: %s → %s", q.panel, expr, strings.Join(values, " "))
		if !good {
			t.Errorf("dashboard panel %q: %s answers %v, want a number for the function", q.panel, expr, values)
		}
	}
}

type dashboardQuery struct{ panel, expr string }

// dashboardQueries returns the queries of deploy/grafana/nebula-dashboard.json:
// its template variable's and every panel target's.
func dashboardQueries(t *testing.T) []dashboardQuery {
	var dash struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(readRepoFile(t, "deploy/grafana/nebula-dashboard.json")), &dash); err != nil {
		t.Fatal(err)
	}
	var qs []dashboardQuery
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			qs = append(qs, dashboardQuery{"variable " + v.Name, v.Definition})
		}
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			qs = append(qs, dashboardQuery{p.Title, target.Expr})
		}
	}
	if len(qs) < 10 {
		t.Fatalf("the dashboard has %d queries", len(qs))
	}
	return qs
}
