//go:build k8s

package k8s

import (
	"fmt"
	"strings"
	"testing"

	"nebula.dev/nebula/test/harness"
)

// metered is a Deployment of the probe compiled to wasm in function mode,
// shaped as deploy/prometheus/podmonitor.yaml expects a function pod
// (Knative's shape): labelled nebula.dev/function, its container named
// user-container declaring the event port only, /metrics on Nebula's
// default metrics port 9464. K_SERVICE names the function in the metrics.
var metered = fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: metered
  labels:
    app: metered
spec:
  replicas: 1
  selector:
    matchLabels:
      app: metered
  template:
    metadata:
      labels:
        app: metered
        nebula.dev/function: metered
    spec:
      runtimeClassName: nebula
      terminationGracePeriodSeconds: 10
      containers:
      - name: user-container
        image: %s
        imagePullPolicy: Never
        env:
        - name: K_SERVICE
          value: metered
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 2
        resources:
          limits:
            memory: 256Mi
`, harness.ProbeFnWasmImage)

// TestNode covers what runs on the node around a function, on one cluster:
// kubectl exec of a wasm module into a wasm function pod (Exec), the
// Prometheus Operator's PodMonitor CRD accepting
// deploy/prometheus/podmonitor.yaml and matching the function pod
// (PodMonitor), a real Prometheus discovering and scraping it through the
// API server with the PodMonitor's relabelling and every query of the
// Grafana dashboard answering (Prometheus), and the node installer as a
// DaemonSet against a containerd config of the test's own (Installer).
func TestNode(t *testing.T) {
	k := harness.StartKubernetes(t)
	kubectl(t, k, "apply", "-f", "deploy/kubernetes/runtimeclass.yaml")
	kubectl(t, k, "label", "node", k.NodeName, "nebula.dev/enabled=true")

	kubectlStdin(t, k, metered, "apply", "-f", "-")
	kubectl(t, k, "rollout", "status", "deployment/metered", "--timeout=150s")
	pod := strings.TrimSpace(kubectl(t, k, "get", "pods", "-l", "app=metered", "-o", "jsonpath={.items[0].metadata.name}"))

	t.Run("Exec", func(t *testing.T) { testExec(t, k, pod) })
	t.Run("PodMonitor", func(t *testing.T) { testPodMonitor(t, k, pod) })
	t.Run("Prometheus", func(t *testing.T) { testPrometheus(t, k, pod) })
	kubectl(t, k, "delete", "deployment/metered", "--timeout=100s")
	kubectl(t, k, "wait", "--for=delete", "pod/"+pod, "--timeout=100s")

	t.Run("Installer", func(t *testing.T) { testInstaller(t, k) })
}
