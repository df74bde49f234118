//go:build k8s

package k8s

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// fnImage is the image deploy/knative/service.yaml runs.
const fnImage = "dev.local/nebula/fn:v1"

// revision is the first Revision of deploy/knative/service.yaml's Service.
const revision = "nebula-fn-00001"

// TestKnative runs deploy/knative/service.yaml, unchanged, on Knative
// Serving built from source (harness.InstallKnative), with kubectl as a
// user types it: its Revision becomes Ready and every condition of the
// Service, Configuration and Route is True except those that need an
// ingress; a CloudEvent sent to the Revision's Service goes through
// queue-proxy into Nebula and gets its reply, and both queue-proxy's and
// Nebula's metrics count it; after the (shortened) idle window the
// Revision scales to zero, and the next event scales it up again through
// the activator. deploy/knative/trigger.yaml passes the API server's
// validation with Knative Eventing's Trigger CRD.
func TestKnative(t *testing.T) {
	k := harness.StartKubernetes(t)
	harness.InstallKnative(t, k)
	kubectl(t, k, "-n", harness.KnativeNamespace, "get", "deployments,pods", "-o", "wide")
	setUpKnativeFunction(t, k)

	t.Run("Service", func(t *testing.T) { testKnativeService(t, k) })
	t.Run("ScaleToZero", func(t *testing.T) { testScaleToZero(t, k) })
	t.Run("Trigger", func(t *testing.T) { testTrigger(t, k) })
	deleteKnativeFunction(t, k)
}

// deleteKnativeFunction deletes service.yaml's Service and waits until
// its pods are gone (kubectl delete returns once the Service is).
func deleteKnativeFunction(t testing.TB, k *harness.Cluster) {
	kubectl(t, k, "delete", "-f", "deploy/knative/service.yaml")
	waitForNoPods(t, k, "serving.knative.dev/service=nebula-fn")
}

// setUpKnativeFunction prepares the node and Knative as the README says,
// builds the function image as service.yaml's comment says, applies
// service.yaml and waits for its Revision to be Ready. The autoscaler's
// idle window is shortened (stable-window and scale-to-zero-grace-period
// 10 s instead of 60 s and 30 s); the activator stays in the request path
// (target-burst-capacity -1): otherwise the autoscaler, before scaling to
// zero, probes the Revision's Service by its DNS name, and the cluster has
// no DNS. queue-proxy exports its request metrics for Prometheus. The
// Service is created after all three, so that its pod has them.
func setUpKnativeFunction(t testing.TB, k *harness.Cluster) {
	kubectl(t, k, "apply", "-f", "deploy/kubernetes/runtimeclass.yaml")
	kubectl(t, k, "label", "node", k.NodeName, "nebula.dev/enabled=true")
	kubectl(t, k, "apply", "-f", "deploy/knative/config-features.yaml")
	kubectl(t, k, "-n", harness.KnativeNamespace, "patch", "configmap", "config-autoscaler", "--type", "merge",
		"-p", `{"data":{"stable-window":"10s","scale-to-zero-grace-period":"10s","target-burst-capacity":"-1"}}`)
	kubectl(t, k, "-n", harness.KnativeNamespace, "patch", "configmap", "config-observability", "--type", "merge",
		"-p", `{"data":{"request-metrics-protocol":"prometheus"}}`)

	archive := filepath.Join(t.TempDir(), "fn.tar")
	args := []string{"build", filepath.Join(harness.Fixtures(t), "probe.wasm"), "--function", "--arg", "ce", "-t", fnImage, "-o", archive}
	if out, err := exec.Command(filepath.Join(k.BinDir, "nebula"), args...).CombinedOutput(); err != nil {
		t.Fatalf("nebula %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	k.ImportImage(t, archive)

	kubectl(t, k, "apply", "-f", "deploy/knative/service.yaml")
	// kubectl wait fails for an object that does not exist yet.
	k.WaitFor(t, "Knative to create Revision "+revision, 2*time.Minute, func() (bool, string) {
		r := k.Kubectl(t, "get", "revision", revision)
		return r.ExitCode == 0, r.Stderr
	})
	kubectl(t, k, "wait", "--for=condition=Ready", "revision/"+revision, "--timeout=5m")
}

func testKnativeService(t *testing.T, k *harness.Cluster) {
	kubectl(t, k, "get", "ksvc,configuration,revision,route")
	kubectl(t, k, "get", "pods", "-o", "wide")

	// Every condition True, but those that wait for an ingress: none is
	// installed (Knative's are Envoy-based), so the Route's Ingress is
	// never reconciled, and the Route — hence the Service — is not Ready.
	needIngress := map[string]bool{"route/IngressReady": true, "route/Ready": true, "ksvc/RoutesReady": true, "ksvc/Ready": true}
	for _, obj := range []string{"ksvc", "configuration", "revision", "route"} {
		name := "nebula-fn"
		if obj == "revision" {
			name = revision
		}
		out := kubectl(t, k, "get", obj, name, "-o",
			`jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`)
		conds := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			typ, rest, _ := strings.Cut(line, "=")
			conds[typ] = rest
			status, _, _ := strings.Cut(rest, " ")
			if want := !needIngress[obj+"/"+typ]; (status == "True") != want {
				t.Errorf("%s %s: condition %s=%s, want True=%v", obj, name, typ, rest, want)
			}
		}
		if _, ok := conds["Ready"]; !ok {
			t.Errorf("%s %s has no Ready condition: %q", obj, name, out)
		}
		if obj == "route" && !strings.Contains(conds["IngressReady"], "IngressNotConfigured") {
			t.Errorf("route IngressReady=%s, want Unknown IngressNotConfigured (no ingress)", conds["IngressReady"])
		}
	}

	// The pod: the user container runs Nebula's host program under the
	// nebula runtime, queue-proxy (a static executable) natively.
	pod := revisionPod(t, k)
	fn, qp := inspect(t, k, containerID(t, k, pod, "user-container")), inspect(t, k, containerID(t, k, pod, "queue-proxy"))
	if !harness.RunsNebulaHost(t, k.BinDir, fn.pid) || fn.runtimeType != "io.containerd.nebula.v1" {
		t.Errorf("user-container runs %q (%s), want nebula-host under io.containerd.nebula.v1", harness.Cmdline(t, fn.pid), fn.runtimeType)
	}
	if harness.RunsNebulaHost(t, k.BinDir, qp.pid) {
		t.Errorf("queue-proxy runs %q under Nebula's host program, want it native", harness.Cmdline(t, qp.pid))
	}
	podIP := strings.TrimSpace(kubectl(t, k, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))

	// Events to the Revision's Service → the activator → queue-proxy →
	// Nebula.
	url := revisionURL(t, k)
	const events = 3
	for i := range events {
		data := fmt.Sprintf("hello through queue-proxy %d", i)
		r, err := postEventWith(ingress, url, fmt.Sprintf("kn-%d", i), "probe.echo", "", data)
		if err != nil {
			t.Fatalf("event %d to %s: %v", i, url, err)
		}
		t.Logf("POST %s (CloudEvent kn-%d, type probe.echo) → %d %s %q", url, i, r.status, r.header.Get("Ce-Type"), r.body)
		if r.status != 200 || string(r.body) != data || r.header.Get("Ce-Type") != "probe.echo.reply" {
			t.Errorf("event %d: %d %q %v", i, r.status, r.body, r.header)
		}
	}

	// Both count them: queue-proxy's request metrics (its duration
	// histogram's count, on :9091) and Nebula's invocations (on :9464,
	// the port service.yaml's prometheus.io annotations name).
	var qpCount, nebulaCount float64
	k.WaitFor(t, "queue-proxy and Nebula to count the events", time.Minute, func() (bool, string) {
		qm, err1 := getBody("http://" + net.JoinHostPort(podIP, "9091") + "/metrics")
		nm, err2 := getBody("http://" + net.JoinHostPort(podIP, "9464") + "/metrics")
		qpCount, nebulaCount = metricSum(qm, "kn_queueproxy_app_duration_seconds_count"), metricSum(nm, "nebula_invocations_total")
		return err1 == nil && err2 == nil && qpCount >= events && nebulaCount >= events,
			fmt.Sprintf("%v %v; queue-proxy: %s; nebula: %s", err1, err2, grep(qm, "kn_queueproxy_app_duration_seconds_count"), grep(nm, "nebula_invocations_total"))
	})
	t.Logf("queue-proxy kn_queueproxy_app_duration_seconds_count %v, nebula_invocations_total %v", qpCount, nebulaCount)
	if qpCount != events || nebulaCount != events {
		t.Errorf("queue-proxy counted %v requests, Nebula %v invocations; want %d each", qpCount, nebulaCount, events)
	}
}

func testScaleToZero(t *testing.T, k *harness.Cluster) {
	// Idle: after the stable window and the grace period, no pod; the
	// Revision's Service points at the activator (its SKS in Proxy mode,
	// as it always is with target-burst-capacity -1).
	waitForZero(t, k)
	kubectl(t, k, "get", "revision", revision, "-o", "custom-columns=NAME:.metadata.name,ACTUAL:.status.actualReplicas,DESIRED:.status.desiredReplicas")
	if mode := kubectl(t, k, "get", "serverlessservice", revision, "-o", "jsonpath={.spec.mode}"); mode != "Proxy" {
		t.Errorf("ServerlessService %s mode %q at zero, want Proxy (the activator in the path)", revision, mode)
	}
	activatorIP := strings.TrimSpace(kubectl(t, k, "-n", harness.KnativeNamespace, "get", "pods", "-l", "app=activator", "-o", "jsonpath={.items[0].status.podIP}"))
	endpoints := kubectl(t, k, "get", "endpointslices", "-l", "kubernetes.io/service-name="+revision, "-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
	if strings.TrimSpace(endpoints) != activatorIP {
		t.Errorf("Service %s's endpoints at zero are %q, want the activator's %s", revision, endpoints, activatorIP)
	}

	// The next event: the activator holds it, has the autoscaler scale
	// the Revision up, and forwards it once the pod is ready.
	began := time.Now()
	r, err := postEventWith(ingress, revisionURL(t, k), "kn-cold", "probe.echo", "", "from zero")
	if err != nil {
		t.Fatalf("event at zero: %v", err)
	}
	t.Logf("event at zero → %d %q after %v", r.status, r.body, time.Since(began).Round(time.Millisecond))
	if r.status != 200 || string(r.body) != "from zero" || r.header.Get("Ce-Type") != "probe.echo.reply" {
		t.Errorf("event at zero: %d %q %v", r.status, r.body, r.header)
	}
	kubectl(t, k, "get", "pods", "-l", "serving.knative.dev/revision="+revision, "-o", "wide")
	if pods := strings.Fields(k.MustKubectl(t, "get", "pods", "-l", "serving.knative.dev/revision="+revision, "-o", "name")); len(pods) != 1 {
		t.Errorf("after the event at zero: pods %v, want one", pods)
	}
}

// testTrigger applies deploy/knative/trigger.yaml against Eventing's Trigger
// CRD (a fixture from knative.dev/eventing v0.47.0, testdata/eventing), and
// checks that the API server rejects a Trigger whose retry count is not an
// integer.
func testTrigger(t *testing.T, k *harness.Cluster) {
	kubectl(t, k, "apply", "-f", "test/k8s/testdata/eventing/trigger-crd.yaml")
	kubectl(t, k, "wait", "--for=condition=Established", "crd/triggers.eventing.knative.dev", "--timeout=100s")
	out := kubectl(t, k, "apply", "-f", "deploy/knative/trigger.yaml")
	if !strings.Contains(out, "trigger.eventing.knative.dev/nebula-fn-echo created") {
		t.Errorf("applying trigger.yaml: %q", out)
	}
	kubectl(t, k, "get", "trigger", "nebula-fn-echo", "-o", "jsonpath={.spec}")
	kubectl(t, k, "delete", "-f", "deploy/knative/trigger.yaml")

	trigger := readRepoFile(t, "deploy/knative/trigger.yaml")
	bad := strings.Replace(trigger, "retry: 3", `retry: "three"`, 1)
	if bad == trigger {
		t.Fatalf("trigger.yaml has no 'retry: 3' to make invalid")
	}
	r := k.KubectlStdin(t, bad, "apply", "-f", "-")
	t.Logf("$ kubectl apply -f -   # trigger.yaml with retry: \"three\"\n%s%s", r.Stdout, r.Stderr)
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "spec.delivery.retry") {
		t.Errorf("a Trigger with retry \"three\": exit %d %s%s, want it rejected naming spec.delivery.retry", r.ExitCode, r.Stdout, r.Stderr)
	}
	kubectl(t, k, "delete", "-f", "test/k8s/testdata/eventing/trigger-crd.yaml")
}

// waitForZero waits until the Revision has no pod at all.
func waitForZero(t testing.TB, k *harness.Cluster) {
	t.Helper()
	waitForNoPods(t, k, "serving.knative.dev/revision="+revision)
}

// waitForNoPods waits until no pod matches selector.
func waitForNoPods(t testing.TB, k *harness.Cluster, selector string) {
	t.Helper()
	k.WaitFor(t, "no pod "+selector, 3*time.Minute, func() (bool, string) {
		out := k.MustKubectl(t, "get", "pods", "-l", selector, "-o", "name")
		return strings.TrimSpace(out) == "", out
	})
}

// revisionPod returns the name of the Revision's one pod.
func revisionPod(t *testing.T, k *harness.Cluster) string {
	t.Helper()
	pods := strings.Fields(k.MustKubectl(t, "get", "pods", "-l", "serving.knative.dev/revision="+revision,
		"--field-selector", "status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(pods) != 1 {
		t.Fatalf("pods of %s: %v, want one", revision, pods)
	}
	return pods[0]
}

// revisionURL is http://CLUSTER-IP:80/ of the Revision's (public) Service.
func revisionURL(t testing.TB, k *harness.Cluster) string {
	t.Helper()
	ip := strings.TrimSpace(k.MustKubectl(t, "get", "service", revision, "-o", "jsonpath={.spec.clusterIP}"))
	if parsed := net.ParseIP(ip); parsed == nil || !k.ServiceCIDR.Contains(parsed) {
		t.Fatalf("Service %s ClusterIP %q is not in %s", revision, ip, k.ServiceCIDR)
	}
	return "http://" + net.JoinHostPort(ip, "80") + "/"
}

// ingress is a client that plays the part of Knative's ingress: it tells
// the activator which Revision a request is for, in the headers an
// ingress adds from the Route (Knative-Serving-Revision and
// Knative-Serving-Namespace). Without them the activator answers 404.
var ingress = &http.Client{Timeout: 5 * time.Minute, Transport: revisionHeaders{&http.Transport{Proxy: nil, DisableKeepAlives: true}}}

type revisionHeaders struct{ http.RoundTripper }

func (h revisionHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Knative-Serving-Revision", revision)
	req.Header.Set("Knative-Serving-Namespace", "default")
	return h.RoundTripper.RoundTrip(req)
}

// readRepoFile reads path, relative to the repository's root.
// getBody GETs url and returns its body.
func getBody(url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// metricSum sums the samples of metric (exactly that name, any labels)
// in a Prometheus text exposition.
func metricSum(exposition, metric string) float64 {
	sum := 0.0
	for _, line := range strings.Split(exposition, "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if name != metric {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
