//go:build k8s

package k8s

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nebula.dev/nebula/test/harness"
)

// podMonitorCRD is the Prometheus Operator's PodMonitor CRD, a fixture
// (see testdata/prometheus-operator/README.md).
const podMonitorCRD = "test/k8s/testdata/prometheus-operator/monitoring.coreos.com_podmonitors.yaml"

// podMonitor is the part of a PodMonitor this package reads.
type podMonitor struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		NamespaceSelector struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector struct {
			MatchLabels      map[string]string `json:"matchLabels"`
			MatchExpressions []struct {
				Key      string   `json:"key"`
				Operator string   `json:"operator"`
				Values   []string `json:"values"`
			} `json:"matchExpressions"`
		} `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string       `json:"port"`
			Path        string       `json:"path"`
			Interval    string       `json:"interval"`
			Relabelings []relabeling `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// relabeling is the Operator's RelabelConfig.
type relabeling struct {
	Action       string   `json:"action"`
	SourceLabels []string `json:"sourceLabels"`
	Separator    string   `json:"separator"`
	Regex        string   `json:"regex"`
	TargetLabel  string   `json:"targetLabel"`
	Replacement  *string  `json:"replacement"`
	Modulus      uint64   `json:"modulus"`
}

// labelSelector renders the PodMonitor's selector for kubectl -l.
func (m podMonitor) labelSelector(t *testing.T) string {
	var terms []string
	for k, v := range m.Spec.Selector.MatchLabels {
		terms = append(terms, k+"="+v)
	}
	for _, e := range m.Spec.Selector.MatchExpressions {
		switch e.Operator {
		case "Exists":
			terms = append(terms, e.Key)
		case "DoesNotExist":
			terms = append(terms, "!"+e.Key)
		case "In", "NotIn":
			terms = append(terms, e.Key+" "+strings.ToLower(e.Operator)+" ("+strings.Join(e.Values, ",")+")")
		default:
			t.Fatalf("selector operator %q", e.Operator)
		}
	}
	return strings.Join(terms, ",")
}

// testPodMonitor: with the Operator's CRD (the fixture) installed, the API
// server accepts deploy/prometheus/podmonitor.yaml unchanged and rejects a
// PodMonitor its schema forbids; the stored PodMonitor's selector picks the
// running function pod (and nothing else), its relabelling keeps the pod's
// container by name, and the port it readdresses to serves Nebula's
// /metrics.
func testPodMonitor(t *testing.T, k *harness.Cluster, pod string) {
	kubectl(t, k, "apply", "--server-side", "-f", podMonitorCRD)
	kubectl(t, k, "wait", "--for=condition=Established", "crd/podmonitors.monitoring.coreos.com", "--timeout=60s")
	// The namespace of deploy/kubernetes/installer.yaml, whose removal
	// (testInstaller) removes the PodMonitor again.
	kubectl(t, k, "create", "namespace", "nebula-system")

	out := kubectl(t, k, "apply", "-f", "deploy/prometheus/podmonitor.yaml")
	if !strings.Contains(out, "podmonitor.monitoring.coreos.com/nebula-functions created") {
		t.Fatalf("applying the PodMonitor: %q", out)
	}

	// The schema is enforced: an unknown relabelling action is refused,
	// and nothing is stored.
	invalid := strings.Replace(readRepoFile(t, "deploy/prometheus/podmonitor.yaml"), "action: keep", "action: explode", 1)
	invalid = strings.Replace(invalid, "name: nebula-functions", "name: invalid", 1)
	r := k.KubectlStdin(t, invalid, "apply", "-f", "-")
	t.Logf("$ kubectl apply -f - # the PodMonitor with action: explode\n%s%s(exit %d)", r.Stdout, r.Stderr, r.ExitCode)
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, `Unsupported value: "explode"`) {
		t.Errorf("an invalid PodMonitor: exit %d stderr %q, want the API server's Unsupported value", r.ExitCode, r.Stderr)
	}
	if r := k.Kubectl(t, "get", "podmonitor", "-n", "nebula-system", "invalid"); r.ExitCode == 0 {
		t.Errorf("the invalid PodMonitor was stored")
	}

	m := storedPodMonitor(t, k)
	if !m.Spec.NamespaceSelector.Any || len(m.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("stored PodMonitor: %+v", m.Spec)
	}
	selector := m.labelSelector(t)
	selected := strings.Fields(kubectl(t, k, "get", "pods", "--all-namespaces", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"))
	if len(selected) != 1 || selected[0] != pod {
		t.Errorf("the PodMonitor's selector %q picks %v, want the function pod %s", selector, selected, pod)
	}

	// Its relabelling: keep the container named X, readdress to :PORT.
	ep := m.Spec.PodMetricsEndpoints[0]
	var container, port string
	for _, rl := range ep.Relabelings {
		switch {
		case rl.Action == "keep" && len(rl.SourceLabels) == 1 && rl.SourceLabels[0] == "__meta_kubernetes_pod_container_name":
			container = rl.Regex
		case rl.TargetLabel == "__address__" && rl.Replacement != nil:
			_, port, _ = strings.Cut(*rl.Replacement, ":")
		}
	}
	containers := kubectl(t, k, "get", "pod", pod, "-o", "jsonpath={.spec.containers[*].name}")
	if container == "" || !strings.Contains(" "+containers+" ", " "+container+" ") {
		t.Errorf("the PodMonitor keeps container %q; the pod has %q", container, containers)
	}
	if port != "9464" {
		t.Errorf("the PodMonitor readdresses to port %q, want Nebula's default metrics port 9464", port)
	}
	ip := strings.TrimSpace(kubectl(t, k, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	metricsURL := "http://" + ip + ":" + port + ep.Path
	resp, err := client.Get(metricsURL)
	if err != nil {
		t.Fatalf("GET %s: %v", metricsURL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "nebula_invocations_total") {
		t.Errorf("GET %s: %d, want Nebula's metrics:\n%.500s", metricsURL, resp.StatusCode, body)
	}
	t.Logf("the PodMonitor's target for pod %s: %s (container %s) → %d", pod, metricsURL, container, resp.StatusCode)
}

// storedPodMonitor returns deploy/prometheus/podmonitor.yaml's PodMonitor
// as the API server stores it.
func storedPodMonitor(t *testing.T, k *harness.Cluster) podMonitor {
	t.Helper()
	var m podMonitor
	out := k.MustKubectl(t, "get", "podmonitor", "-n", "nebula-system", "nebula-functions", "-o", "json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("the stored PodMonitor: %v\n%s", err, out)
	}
	return m
}

func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
