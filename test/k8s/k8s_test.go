//go:build k8s

package k8s

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// function is a Deployment of the probe compiled to wasm in function mode
// (nebula build --function), with the nebula RuntimeClass, the kubelet's
// own probes on Nebula's /healthz, limits, and a concurrency of 4 so that
// the 4 wasm instances' memory limits share the pod's; and a
// ClusterIP Service in front of it.
var function = fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: probe
  labels:
    app: probe
spec:
  replicas: 1
  selector:
    matchLabels:
      app: probe
  template:
    metadata:
      labels:
        app: probe
      annotations:
        nebula.dev/concurrency: "4"
    spec:
      runtimeClassName: nebula
      terminationGracePeriodSeconds: 60
      containers:
      - name: fn
        image: %s
        imagePullPolicy: Never
        ports:
        - name: http
          containerPort: 8080
        - name: metrics
          containerPort: 9464
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 2
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 5
        resources:
          limits:
            memory: 512Mi
            cpu: 500m
---
apiVersion: v1
kind: Service
metadata:
  name: probe
spec:
  type: ClusterIP
  selector:
    app: probe
  ports:
  - name: http
    port: 80
    targetPort: http
`, harness.ProbeFnWasmImage)

// mixed is a pod of a wasm function and a native sidecar (the probe
// built for Linux, sleeping), with the nebula RuntimeClass, and a
// ClusterIP Service in front of the function.
var mixed = fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: mixed
spec:
  selector:
    app: mixed
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: mixed
  labels:
    app: mixed
spec:
  runtimeClassName: nebula
  containers:
  - name: fn
    image: %s
    imagePullPolicy: Never
    readinessProbe:
      httpGet:
        path: /healthz
        port: 8080
      periodSeconds: 2
  - name: sidecar
    image: %s
    imagePullPolicy: Never
    command: ["/probe", "sleep", "10m"]
`, harness.ProbeFnWasmImage, harness.ProbeImage)

// TestKubernetes runs Nebula functions on a single-node cluster, with
// kubectl as a user types it: deploy/kubernetes/runtimeclass.yaml applied
// unchanged; a wasm function Deployment becomes Available through the
// kubelet's probes, its limits reach the container and Nebula's memory
// model; a ClusterIP Service reaches it through kube-proxy; kubectl logs
// shows the function's stderr; kubectl delete drains an in-flight event; a
// pod of a wasm function and a native sidecar works, and reaches the
// function through a Service too.
func TestKubernetes(t *testing.T) {
	k := harness.StartKubernetes(t)
	kubectl(t, k, "get", "nodes", "-o", "wide")

	out := kubectl(t, k, "apply", "-f", "deploy/kubernetes/runtimeclass.yaml")
	if !strings.Contains(out, "runtimeclass.node.k8s.io/nebula created") {
		t.Fatalf("applying the RuntimeClass: %q", out)
	}
	// The RuntimeClass schedules onto labelled nodes only.
	kubectl(t, k, "label", "node", k.NodeName, "nebula.dev/enabled=true")

	t.Run("Deployment", func(t *testing.T) { testDeployment(t, k) })
	t.Run("MixedPod", func(t *testing.T) { testMixedPod(t, k) })
}

func testDeployment(t *testing.T, k *harness.Cluster) {
	kubectlStdin(t, k, function, "apply", "-f", "-")
	kubectl(t, k, "rollout", "status", "deployment/probe", "--timeout=100s")
	kubectl(t, k, "wait", "--for=condition=Available", "deployment/probe", "--timeout=100s")
	kubectl(t, k, "get", "deployment,pods,service", "-o", "wide")

	pod := strings.TrimSpace(kubectl(t, k, "get", "pods", "-l", "app=probe", "-o", "jsonpath={.items[0].metadata.name}"))
	ready := kubectl(t, k, "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if ready != "True" {
		t.Fatalf("pod %s Ready=%q after the Deployment became Available", pod, ready)
	}

	// The probes are the kubelet's own: its prober counts successful
	// readiness and liveness probes of the container (read through the API
	// server's node proxy), and the container never restarted.
	k.WaitFor(t, "the kubelet to count a successful liveness probe", 2*time.Minute, func() (bool, string) {
		metrics := k.MustKubectl(t, "get", "--raw", "/api/v1/nodes/"+k.NodeName+"/proxy/metrics/probes")
		return probeCount(metrics, pod, "Readiness") > 0 && probeCount(metrics, pod, "Liveness") > 0, grep(metrics, pod)
	})
	if restarts := kubectl(t, k, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); restarts != "0" {
		t.Errorf("pod %s restarted %s times", pod, restarts)
	}

	// The kubelet ran the pod through CRI's nebula handler, the function
	// container as a wasm task of Nebula's host program.
	id := containerID(t, k, pod, "fn")
	ci := inspect(t, k, id)
	if ci.runtimeType != "io.containerd.nebula.v1" {
		t.Errorf("container %s runtime %q, want io.containerd.nebula.v1", id, ci.runtimeType)
	}
	argv := harness.Cmdline(t, ci.pid)
	if !harness.RunsNebulaHost(t, k.BinDir, ci.pid) {
		t.Fatalf("function container runs %q, not nebula-host", argv)
	}
	t.Logf("container %s (%s) runs %q", id, ci.runtimeType, argv)
	// resources.limits reach the task's cgroup, and Nebula's memory model
	// follows: the 4 concurrent wasm instances' limits fit in the pod's
	// (package oci divides it; the host keeps a share of its own).
	const podLimit, concurrency = 512 << 20, 4
	if got, err := strconv.ParseUint(argAfter(argv, "--memory-limit"), 10, 64); err != nil || got*concurrency > podLimit || got < podLimit/(4*concurrency) {
		t.Errorf("nebula-host --memory-limit %q, want at most %d and at least %d (512Mi shared by concurrency 4); argv %q",
			argAfter(argv, "--memory-limit"), podLimit/concurrency, podLimit/(4*concurrency), argv)
	}
	if got := cgroupValue(t, ci.pid, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(podLimit) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", got, podLimit)
	}
	if got := cgroupValue(t, ci.pid, "cpu", "cpu.cfs_quota_us"); got != "50000" {
		t.Errorf("cpu.cfs_quota_us = %s, want 50000 (500m)", got)
	}

	// A CloudEvent from the host to the Service's ClusterIP, through
	// kube-proxy's rules, to the pod.
	clusterIP := strings.TrimSpace(kubectl(t, k, "get", "service", "probe", "-o", "jsonpath={.spec.clusterIP}"))
	if ip := net.ParseIP(clusterIP); ip == nil || !k.ServiceCIDR.Contains(ip) {
		t.Fatalf("ClusterIP %q is not in the cluster's service range %s", clusterIP, k.ServiceCIDR)
	}
	svc := "http://" + net.JoinHostPort(clusterIP, "80") + "/"
	var r reply
	k.WaitFor(t, "the Service to answer through kube-proxy", 2*time.Minute, func() (bool, string) {
		var err error
		r, err = postEvent(svc, "k8s-1", "probe.echo", "", "hello through the service")
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("POST %s (CloudEvent type probe.echo) from the host → %d %s %q", svc, r.status, r.header.Get("Ce-Type"), r.body)
	if r.status != 200 || string(r.body) != "hello through the service" || r.header.Get("Ce-Type") != "probe.echo.reply" {
		t.Errorf("event through the Service: %d %q %v", r.status, r.body, r.header)
	}

	// The function's stderr is the container's: kubectl logs shows it.
	if r, err := postEvent(svc, "k8s-stderr", "probe.stderr", "", ""); err != nil || r.status/100 != 2 {
		t.Fatalf("probe.stderr event: %v %d %q", err, r.status, r.body)
	}
	var logs string
	k.WaitFor(t, "kubectl logs to show the function's stderr", time.Minute, func() (bool, string) {
		logs = kubectl(t, k, "logs", "deployment/probe")
		return strings.Contains(logs, "line two to stderr"), logs
	})
	for _, want := range []string{"line one to stderr", "line two to stderr", "k8s-stderr"} {
		if !strings.Contains(logs, want) {
			t.Errorf("kubectl logs lacks %q:\n%s", want, logs)
		}
	}

	// kubectl delete while an event is in flight: the kubelet's SIGTERM
	// drains it, and its reply arrives.
	inflight := make(chan reply, 1)
	go func() {
		r, err := postEvent(svc, "k8s-drain", "probe.sleep", "3s", "")
		if err != nil {
			r.body = []byte(err.Error())
		}
		inflight <- r
	}()
	time.Sleep(time.Second)
	kubectl(t, k, "delete", "deployment/probe")
	kubectl(t, k, "wait", "--for=delete", "pod/"+pod, "--timeout=100s")
	select {
	case r := <-inflight:
		t.Logf("in-flight event probe.sleep 3s, sent before kubectl delete → %d %q", r.status, r.body)
		if r.status != 200 || !strings.Contains(string(r.body), "slept") {
			t.Errorf("in-flight event during kubectl delete: %d %q, want 200 slept", r.status, r.body)
		}
	case <-time.After(time.Minute):
		t.Errorf("in-flight event during kubectl delete: no reply a minute after the pod was deleted")
	}
	kubectl(t, k, "delete", "service/probe")
}

func testMixedPod(t *testing.T, k *harness.Cluster) {
	kubectlStdin(t, k, mixed, "apply", "-f", "-")
	kubectl(t, k, "wait", "--for=condition=Ready", "pod/mixed", "--timeout=100s")

	fn, side := inspect(t, k, containerID(t, k, "mixed", "fn")), inspect(t, k, containerID(t, k, "mixed", "sidecar"))
	if !harness.RunsNebulaHost(t, k.BinDir, fn.pid) {
		t.Errorf("function container runs %q, not nebula-host", harness.Cmdline(t, fn.pid))
	}
	if argv := harness.Cmdline(t, side.pid); strings.Join(argv, " ") != "/probe sleep 10m" || harness.RunsNebulaHost(t, k.BinDir, side.pid) {
		t.Errorf("sidecar runs %q, want /probe sleep 10m natively", argv)
	}
	// The sidecar reaches the function on localhost, in the pod's network
	// namespace; kubectl exec goes API server → kubelet → CRI.
	sidecarPost(t, k, "http://localhost:8080/", "side-1")
	// And through the Service: pod → ClusterIP → kube-proxy's rules → the
	// same pod (hairpin), as in-cluster clients reach a function.
	clusterIP := strings.TrimSpace(kubectl(t, k, "get", "service", "mixed", "-o", "jsonpath={.spec.clusterIP}"))
	sidecarPost(t, k, "http://"+net.JoinHostPort(clusterIP, "80")+"/", "side-2")
	kubectl(t, k, "delete", "pod/mixed", "service/mixed", "--timeout=100s")
}

// sidecarPost has the mixed pod's sidecar POST a probe.echo CloudEvent
// to url with kubectl exec (API server → kubelet → CRI), and checks the
// function's reply.
func sidecarPost(t *testing.T, k *harness.Cluster, url, id string) {
	t.Helper()
	data := "hello from the sidecar, " + id
	out := kubectl(t, k, "exec", "mixed", "-c", "sidecar", "--", "/probe", "post", url, data,
		"Ce-Specversion:1.0", "Ce-Id:"+id, "Ce-Source:/sidecar", "Ce-Type:probe.echo", "Content-Type:text/plain")
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("the sidecar's reply from %s is not HTTP: %v\n%s", url, err, out)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != data || resp.Header.Get("Ce-Type") != "probe.echo.reply" {
		t.Errorf("sidecar → %s: %d %q %v", url, resp.StatusCode, body, resp.Header)
	}
}

// probeCount sums the kubelet's prober_probe_total of successful probes
// of probeType ("Readiness", "Liveness") for container fn of pod.
func probeCount(metrics, pod, probeType string) int {
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "prober_probe_total{") || !strings.Contains(line, `pod="`+pod+`"`) ||
			!strings.Contains(line, `container="fn"`) || !strings.Contains(line, `probe_type="`+probeType+`"`) ||
			!strings.Contains(line, `result="successful"`) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		n += int(v)
	}
	return n
}

// grep returns the lines of s that contain substr.
func grep(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// kubectl runs kubectl, logs the command and its output (the README's
// transcript comes from here) and fails t unless it exits 0.
func kubectl(t testing.TB, k *harness.Cluster, args ...string) string {
	t.Helper()
	return kubectlStdin(t, k, "", args...)
}

func kubectlStdin(t testing.TB, k *harness.Cluster, stdin string, args ...string) string {
	t.Helper()
	out := k.MustKubectlStdin(t, stdin, args...)
	t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
	return out
}

// containerID returns the CRI ID of container name in pod.
func containerID(t *testing.T, k *harness.Cluster, pod, name string) string {
	t.Helper()
	id := k.MustKubectl(t, "get", "pod", pod, "-o", fmt.Sprintf(`jsonpath={.status.containerStatuses[?(@.name==%q)].containerID}`, name))
	if !strings.HasPrefix(id, "containerd://") {
		t.Fatalf("pod %s container %s: ID %q, want containerd://…", pod, name, id)
	}
	return strings.TrimPrefix(id, "containerd://")
}

type containerInfo struct {
	pid         int
	runtimeType string
}

func inspect(t *testing.T, k *harness.Cluster, id string) containerInfo {
	t.Helper()
	ci := k.InspectContainer(t, id)
	if ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("container %s is %s, want running", id, ci.Status.State)
	}
	return containerInfo{pid: ci.Info.Pid, runtimeType: ci.Info.RuntimeType}
}

// argAfter returns the argument after flag in argv ("" if absent).
func argAfter(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// cgroupValue reads file of process pid's cgroup in the cgroup v1
// controller hierarchy.
func cgroupValue(t *testing.T, pid int, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, f[2], file))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(v))
			}
		}
	}
	t.Fatalf("pid %d is in no %s cgroup:\n%s", pid, controller, b)
	return ""
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// client sends requests to the cluster's addresses only: no proxy from
// the environment, no keep-alive, bounded in time.
var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// postEvent POSTs a binary-mode CloudEvent with client.
func postEvent(url, id, typ, subject, data string) (reply, error) {
	return postEventWith(client, url, id, typ, subject, data)
}

// postEventWith is postEvent with the given client.
func postEventWith(c *http.Client, url, id, typ, subject, data string) (reply, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader([]byte(data)))
	if err != nil {
		return reply{}, err
	}
	for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/test/k8s", "Ce-Type": typ, "Content-Type": "text/plain"} {
		req.Header.Set(k, v)
	}
	if subject != "" {
		req.Header.Set("Ce-Subject", subject)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}, err
}
