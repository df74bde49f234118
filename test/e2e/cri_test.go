package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/test/harness"
)

// Kubernetes-level tests: containerd's CRI plugin driven by crictl, which
// is what the kubelet calls, with pods on a CNI bridge of the test's own
// (harness.StartCRI). Traffic goes from the host to the pods' IPs on that
// bridge only, with bounded retries.

// knativeEnv is what Knative Serving sets in a revision's user container.
func knativeEnv(service string, port int) map[string]string {
	return map[string]string{
		"PORT":            strconv.Itoa(port),
		"K_SERVICE":       service,
		"K_CONFIGURATION": service,
		"K_REVISION":      service + "-00001",
	}
}

// TestCRIFunction runs a function-mode wasm container in a pod with the
// runtime handler nebula, end to end through CRI: the pause container stays
// runc even when the pod asks for wasm, events and /metrics reach the
// function on the pod's IP, crictl logs/stats work, and stopping and
// removing the pod leaves nothing behind.
func TestCRIFunction(t *testing.T) {
	c := harness.StartCRI(t)
	pod := c.RunPod(t, harness.PodSpec{Name: "fn-wasm", Annotations: map[string]string{oci.AnnotationPrefix + "runtime": "wasm"}})

	// The pod annotation reaches the pause container's spec too
	// (pod_annotations), yet it runs under runc: the image's own /pause.
	pi := c.InspectPod(t, pod.ID)
	if pi.Status.RuntimeHandler != harness.RuntimeHandler || pi.Info.RuntimeType != nebula {
		t.Errorf("pod runtime: handler %q type %q, want %q %q", pi.Status.RuntimeHandler, pi.Info.RuntimeType, harness.RuntimeHandler, nebula)
	}
	if pi.Status.State != "SANDBOX_READY" || pi.Info.Image != harness.PauseImage {
		t.Errorf("pod state %q image %q, want SANDBOX_READY %s", pi.Status.State, pi.Info.Image, harness.PauseImage)
	}
	if argv := harness.Cmdline(t, pi.Info.Pid); !reflect.DeepEqual(argv, []string{"/pause"}) || harness.RunsNebulaHost(t, c.BinDir, pi.Info.Pid) {
		t.Errorf("pause container runs %q (nebula host: %v), want /pause under runc", argv, harness.RunsNebulaHost(t, c.BinDir, pi.Info.Pid))
	}

	const port = oci.DefaultPort
	id := c.CreateContainer(t, pod, harness.ContainerSpec{Name: "fn", Image: probeFnWasm, Env: knativeEnv("fn-svc", port)})
	c.MustCrictl(t, "start", id)
	ci := c.InspectContainer(t, id)
	if ci.Status.State != "CONTAINER_RUNNING" || ci.Info.RuntimeType != nebula || !harness.RunsNebulaHost(t, c.BinDir, ci.Info.Pid) {
		t.Fatalf("function container: state %s, runtime %s, nebula host %v; want a running wasm task of %s",
			ci.Status.State, ci.Info.RuntimeType, harness.RunsNebulaHost(t, c.BinDir, ci.Info.Pid), nebula)
	}

	base := podURL(t, c, pod, port)
	waitReady(t, c, base+"healthz")

	// A CloudEvent from the host to the pod's IP, as a broker sends it.
	r := postEvent(t, base, "ev-echo", "probe.echo", "", "hello from the host")
	if r.status != 200 || string(r.body) != "hello from the host" {
		t.Fatalf("echo event: %d %q", r.status, r.body)
	}
	if r.header.Get("Ce-Type") != "probe.echo.reply" || r.header.Get("Ce-Source") != "/nebula/fn-svc" || r.header.Get("Server-Timing") == "" {
		t.Errorf("reply headers: %v", r.header)
	}
	if r := postEvent(t, base, "ev-stderr", "probe.stderr", "", ""); r.status != 202 {
		t.Errorf("stderr event: %d %q, want 202", r.status, r.body)
	}

	// /metrics on the default metrics port of the pod's IP counts both.
	fams := scrapeURL(t, podURL(t, c, pod, oci.DefaultMetricsPort)+"metrics")
	for code, want := range map[string]float64{"200": 1, "202": 1} {
		if got := counter(fams, "nebula_invocations_total", map[string]string{"function": "fn-svc", "runtime": "wasm", "code": code}); got != want {
			t.Errorf("nebula_invocations_total{code=%s} = %v, want %v", code, got, want)
		}
	}
	for _, h := range []string{"nebula_invocation_startup_seconds", "nebula_invocation_execution_seconds"} {
		if n := histogramCount(fams, h, "fn-svc"); n != 2 {
			t.Errorf("%s: %d observations, want 2", h, n)
		}
	}

	// crictl logs: the guest's stderr, attributed to its event.
	logs := c.Crictl(t, "logs", id)
	for _, want := range []string{"[ev-stderr] line one to stderr", "[ev-stderr] line two to stderr"} {
		if !strings.Contains(logs.Stdout+logs.Stderr, want) {
			t.Errorf("crictl logs lacks %q:\nstdout: %s\nstderr: %s", want, logs.Stdout, logs.Stderr)
		}
	}

	// crictl stats: the container's cgroup, as for any runc container.
	var stats struct {
		Stats []struct {
			Attributes struct {
				ID string `json:"id"`
			} `json:"attributes"`
			CPU struct {
				UsageCoreNanoSeconds struct {
					Value string `json:"value"`
				} `json:"usageCoreNanoSeconds"`
			} `json:"cpu"`
			Memory struct {
				WorkingSetBytes struct {
					Value string `json:"value"`
				} `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"stats"`
	}
	out := c.MustCrictl(t, "stats", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &stats); err != nil || len(stats.Stats) != 1 {
		t.Fatalf("crictl stats: %v\n%s", err, out)
	}
	s := stats.Stats[0]
	cpu, _ := strconv.ParseUint(s.CPU.UsageCoreNanoSeconds.Value, 10, 64)
	mem, _ := strconv.ParseUint(s.Memory.WorkingSetBytes.Value, 10, 64)
	if s.Attributes.ID != id || cpu == 0 || mem == 0 {
		t.Errorf("crictl stats: id %s, cpu %d ns, working set %d bytes; want the container's, both > 0", s.Attributes.ID, cpu, mem)
	}

	// With a grace period, as the kubelet stops containers (crictl's
	// default of 0 is SIGKILL at once).
	c.MustCrictl(t, "stop", "--timeout", "30", id)
	if ci := c.InspectContainer(t, id); ci.Status.State != "CONTAINER_EXITED" || ci.Status.ExitCode != 0 {
		t.Errorf("after crictl stop: %s, exit %d; want CONTAINER_EXITED, 0", ci.Status.State, ci.Status.ExitCode)
	}
	c.MustCrictl(t, "rm", id)
	c.RemovePod(t, pod.ID)
	for _, l := range c.Leftovers(t) {
		t.Errorf("left after the pod was removed: %s", l)
	}
}

// TestCRIMixedPod: one pod, a native sidecar (runc) and a wasm function,
// served by one shim; the sidecar reaches the function on localhost:$PORT
// in the pod's shared network namespace.
func TestCRIMixedPod(t *testing.T) {
	c := harness.StartCRI(t)
	pod := c.RunPod(t, harness.PodSpec{Name: "mixed"})
	const port = 8080
	fn := c.CreateContainer(t, pod, harness.ContainerSpec{Name: "fn", Image: probeFnWasm, Env: knativeEnv("mixed", port)})
	side := c.CreateContainer(t, pod, harness.ContainerSpec{Name: "sidecar", Image: probeImage,
		Command: []string{"/probe"}, Args: []string{"sleep", "10m"}})
	c.MustCrictl(t, "start", fn)
	c.MustCrictl(t, "start", side)

	fi, si := c.InspectContainer(t, fn), c.InspectContainer(t, side)
	if !harness.RunsNebulaHost(t, c.BinDir, fi.Info.Pid) {
		t.Errorf("function container does not run as wasm (pid %d runs %q)", fi.Info.Pid, harness.Cmdline(t, fi.Info.Pid))
	}
	if argv := harness.Cmdline(t, si.Info.Pid); !reflect.DeepEqual(argv, []string{"/probe", "sleep", "10m"}) || harness.RunsNebulaHost(t, c.BinDir, si.Info.Pid) {
		t.Errorf("sidecar runs %q, want /probe sleep 10m under runc", argv)
	}
	// The pause container's shim serves every container of the pod.
	if pids := c.ShimPIDs(); len(pids) != 1 {
		t.Errorf("%d shim processes for one pod (%v), want 1", len(pids), pids)
	}
	waitReady(t, c, podURL(t, c, pod, port)+"healthz")

	r := c.Crictl(t, "exec", side, "/probe", "post", fmt.Sprintf("http://localhost:%d/", port), "hello from the sidecar",
		"Ce-Specversion:1.0", "Ce-Id:side-1", "Ce-Source:/sidecar", "Ce-Type:probe.echo", "Content-Type:text/plain")
	if r.ExitCode != 0 {
		t.Fatalf("crictl exec sidecar probe post: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(r.Stdout)), nil)
	if err != nil {
		t.Fatalf("the sidecar's reply is not HTTP: %v\n%s", err, r.Stdout)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello from the sidecar" || resp.Header.Get("Ce-Type") != "probe.echo.reply" {
		t.Errorf("sidecar → localhost:%d: %d %q %v", port, resp.StatusCode, body, resp.Header)
	}
	fams := scrapeURL(t, podURL(t, c, pod, oci.DefaultMetricsPort)+"metrics")
	if got := counter(fams, "nebula_invocations_total", map[string]string{"function": "mixed", "runtime": "wasm", "code": "200"}); got != 1 {
		t.Errorf("nebula_invocations_total{code=200} = %v, want 1 (the sidecar's event)", got)
	}

	c.RemovePod(t, pod.ID)
	for _, l := range c.Leftovers(t) {
		t.Errorf("left after the pod was removed: %s", l)
	}
}

// TestCRIKnativeContract checks the parts of Knative's runtime contract a
// runtime is responsible for, on a wasm function in a CRI pod: $PORT is
// honoured, K_SERVICE/K_CONFIGURATION/K_REVISION reach the guest, /tmp is
// writable, the probes are answered (and not counted), and SIGTERM
// (crictl stop, as the kubelet stops a container) drains in-flight events
// and exits 0.
func TestCRIKnativeContract(t *testing.T) {
	c := harness.StartCRI(t)
	pod := c.RunPod(t, harness.PodSpec{Name: "ksvc", Labels: map[string]string{"serving.knative.dev/service": "ksvc"}})
	const port = 8801 // Knative's conformance test sets a port of its own
	id := c.CreateContainer(t, pod, harness.ContainerSpec{Name: "user-container", Image: probeFnWasm, Env: knativeEnv("ksvc", port)})
	c.MustCrictl(t, "start", id)
	base := podURL(t, c, pod, port)
	waitReady(t, c, base+"health/readiness")

	// Probes as the kubelet and queue-proxy send them.
	for _, p := range []struct {
		path   string
		header map[string]string
	}{
		{"health/readiness", map[string]string{"User-Agent": "kube-probe/1.34"}},
		{"health/liveness", map[string]string{"User-Agent": "kube-probe/1.34"}},
		{"healthz", map[string]string{"K-Network-Probe": "probe"}},
	} {
		if r := podDo(t, "GET", base+p.path, p.header, nil); r.status != 200 {
			t.Errorf("probe GET /%s: %d, want 200", p.path, r.status)
		}
	}
	// PORT is honoured: nothing listens on the default port.
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(pod.IP, strconv.Itoa(oci.DefaultPort)), 5*time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("something listens on %s:%d although PORT=%d", pod.IP, oci.DefaultPort, port)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dialing %s:%d: %v, want connection refused", pod.IP, oci.DefaultPort, err)
	}

	r := postEvent(t, base, "ev-env", "probe.env", "", "")
	for _, want := range []string{"PORT=8801", "K_SERVICE=ksvc", "K_CONFIGURATION=ksvc", "K_REVISION=ksvc-00001"} {
		if !strings.Contains(string(r.body), "\n"+want+"\n") && !strings.HasPrefix(string(r.body), want+"\n") {
			t.Errorf("the guest's environment lacks %s:\n%s", want, r.body)
		}
	}
	if r := postEvent(t, base, "ev-tmp", "probe.writetmp", "", ""); r.status != 200 || string(r.body) != "written by probe\n" {
		t.Errorf("/tmp: %d %q, want 200 and the file's content", r.status, r.body)
	}
	fams := scrapeURL(t, podURL(t, c, pod, oci.DefaultMetricsPort)+"metrics")
	if got := counter(fams, "nebula_invocations_total", map[string]string{"function": "ksvc", "runtime": "wasm", "code": "200"}); got != 2 {
		t.Errorf("nebula_invocations_total{function=ksvc,code=200} = %v, want 2 (probes are not invocations)", got)
	}

	// SIGTERM with an event in flight: it completes, the task exits 0.
	inflight := make(chan reply, 1)
	go func() { inflight <- postEventNoFatal(base, "ev-sleep", "probe.sleep", "1s", "") }()
	time.Sleep(300 * time.Millisecond) // let the event reach the guest
	start := time.Now()
	c.MustCrictl(t, "stop", "--timeout", "30", id)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("crictl stop took %v: the drain did not end with the in-flight event", d)
	}
	select {
	case r := <-inflight:
		if r.status != 200 || string(r.body) != "slept\n" {
			t.Errorf("in-flight event during SIGTERM: %d %q, want 200 slept", r.status, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("in-flight event unanswered 30s after SIGTERM")
	}
	if ci := c.InspectContainer(t, id); ci.Status.State != "CONTAINER_EXITED" || ci.Status.ExitCode != 0 {
		t.Errorf("after SIGTERM: %s, exit %d (%s); want CONTAINER_EXITED, 0", ci.Status.State, ci.Status.ExitCode, ci.Status.Reason)
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort(pod.IP, strconv.Itoa(port)), 5*time.Second); err == nil {
		conn.Close()
		t.Errorf("the function still accepts connections after it exited")
	}

	c.MustCrictl(t, "rm", id)
	c.RemovePod(t, pod.ID)
	for _, l := range c.Leftovers(t) {
		t.Errorf("left after the pod was removed: %s", l)
	}
}

// podURL is http://IP:PORT/ of a pod on the test's own bridge.
func podURL(t *testing.T, c *harness.CRI, pod *harness.Pod, port int) string {
	t.Helper()
	if !c.Net.Contains(pod.IP) {
		t.Fatalf("pod IP %q is not on the test's network %s", pod.IP, c.Net.Subnet)
	}
	return "http://" + net.JoinHostPort(pod.IP, strconv.Itoa(port)) + "/"
}

// podClient sends requests straight to pod IPs: no proxy from the
// environment, no keep-alive, bounded in time.
var podClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

func podDoErr(method, url string, header map[string]string, body []byte) (reply, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := podClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}, err
}

func podDo(t *testing.T, method, url string, header map[string]string, body []byte) reply {
	t.Helper()
	r, err := podDoErr(method, url, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func eventHeader(id, typ, subject string) map[string]string {
	h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/e2e/cri", "Ce-Type": typ, "Content-Type": "text/plain"}
	if subject != "" {
		h["Ce-Subject"] = subject
	}
	return h
}

// postEvent POSTs a binary-mode CloudEvent.
func postEvent(t *testing.T, url, id, typ, subject, data string) reply {
	t.Helper()
	return podDo(t, "POST", url, eventHeader(id, typ, subject), []byte(data))
}

// postEventNoFatal is postEvent for other goroutines: an error is status 0
// with the error as the body.
func postEventNoFatal(url, id, typ, subject, data string) reply {
	r, err := podDoErr("POST", url, eventHeader(id, typ, subject), []byte(data))
	if err != nil {
		return reply{body: []byte(err.Error())}
	}
	return r
}

// waitReady polls url (a readiness path) every 100 ms, at most 200 times,
// until it answers 200.
func waitReady(t *testing.T, c *harness.CRI, url string) {
	t.Helper()
	var last string
	for i := 0; i < 200; i++ {
		r, err := podDoErr("GET", url, map[string]string{"User-Agent": "kube-probe/1.34"}, nil)
		if err == nil && r.status == 200 {
			return
		}
		last = fmt.Sprint(r.status, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 200 probes (last: %s)\n%s", url, last, c.LogTail(30))
}

func scrapeURL(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	r := podDo(t, "GET", url, nil, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d", url, r.status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}
