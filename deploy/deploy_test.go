package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
	"nebula.dev/nebula/oci"
)

// Every file under deploy/ a test below decodes strictly; TestAllCovered
// fails for a manifest that is not in this list.
var covered = []string{
	"containerd/nebula.toml",
	"kubernetes/runtimeclass.yaml",
	"kubernetes/installer.yaml",
	"knative/service.yaml",
	"knative/config-features.yaml",
	"knative/trigger.yaml",
	"prometheus/podmonitor.yaml",
	"grafana/nebula-dashboard.json",
}

func TestAllCovered(t *testing.T) {
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json", ".toml":
			if !slices.Contains(covered, filepath.ToSlash(p)) {
				t.Errorf("%s is not checked by deploy_test.go", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// documents splits a YAML file into its documents.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// strict decodes one YAML document into v; unknown and duplicate fields
// fail.
func strict(t *testing.T, file string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// one decodes a single-document file strictly.
func one(t *testing.T, file string, v any) {
	t.Helper()
	docs := documents(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", file, len(docs))
	}
	strict(t, file, docs[0], v)
}

// The drop-in containerd imports: the runtime handler behind the
// RuntimeClass.
type dropIn struct {
	Version int `toml:"version"`
	Plugins struct {
		Runtime struct {
			Containerd struct {
				Runtimes map[string]struct {
					RuntimeType          string         `toml:"runtime_type"`
					PodAnnotations       []string       `toml:"pod_annotations"`
					ContainerAnnotations []string       `toml:"container_annotations"`
					Options              map[string]any `toml:"options"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"io.containerd.cri.v1.runtime"`
	} `toml:"plugins"`
}

// handler returns the drop-in's one runtime handler, checked against the
// code: runtime type io.containerd.nebula.v1 (binary
// containerd-shim-nebula-v1, cmd/containerd-shim-nebula-v1) and Nebula's
// annotation prefix passed through for pods and containers.
func handler(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("containerd/nebula.toml")
	if err != nil {
		t.Fatal(err)
	}
	var d dropIn
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("containerd/nebula.toml: %v", err)
	}
	if d.Version != 3 || len(d.Plugins.Runtime.Containerd.Runtimes) != 1 {
		t.Fatalf("containerd/nebula.toml: version %d, %d runtimes; want version 3 and one runtime", d.Version, len(d.Plugins.Runtime.Containerd.Runtimes))
	}
	for name, rt := range d.Plugins.Runtime.Containerd.Runtimes {
		if rt.RuntimeType != "io.containerd.nebula.v1" {
			t.Errorf("runtime_type %q", rt.RuntimeType)
		}
		if _, err := os.Stat("../cmd/containerd-shim-nebula-v1"); err != nil {
			t.Errorf("runtime_type io.containerd.nebula.v1 needs the binary containerd-shim-nebula-v1: %v", err)
		}
		glob := []string{oci.AnnotationPrefix + "*"}
		if !slices.Equal(rt.PodAnnotations, glob) || !slices.Equal(rt.ContainerAnnotations, glob) {
			t.Errorf("pod_annotations %q, container_annotations %q; want %q", rt.PodAnnotations, rt.ContainerAnnotations, glob)
		}
		return name
	}
	return ""
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// installer decodes kubernetes/installer.yaml: a Namespace and the
// DaemonSet.
func installer(t *testing.T) (*corev1.Namespace, *appsv1.DaemonSet) {
	t.Helper()
	const file = "kubernetes/installer.yaml"
	var ns *corev1.Namespace
	var ds *appsv1.DaemonSet
	for _, doc := range documents(t, file) {
		var tm typeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			ns = &corev1.Namespace{}
			strict(t, file, doc, ns)
		case "apps/v1 DaemonSet":
			ds = &appsv1.DaemonSet{}
			strict(t, file, doc, ds)
		default:
			t.Fatalf("%s: unexpected %s %s", file, tm.APIVersion, tm.Kind)
		}
	}
	if ns == nil || ds == nil {
		t.Fatalf("%s: want a Namespace and a DaemonSet", file)
	}
	return ns, ds
}

func TestRuntimeClass(t *testing.T) {
	var rc nodev1.RuntimeClass
	one(t, "kubernetes/runtimeclass.yaml", &rc)
	if rc.APIVersion != "node.k8s.io/v1" || rc.Kind != "RuntimeClass" {
		t.Errorf("runtimeclass.yaml is %s %s", rc.APIVersion, rc.Kind)
	}
	if h := handler(t); rc.Handler != h || rc.Name != h {
		t.Errorf("RuntimeClass %q with handler %q; want both %q, the drop-in's runtime", rc.Name, rc.Handler, h)
	}
	// Pods of the class land only where the installer runs.
	_, ds := installer(t)
	if rc.Scheduling == nil || len(rc.Scheduling.NodeSelector) == 0 {
		t.Fatalf("RuntimeClass has no scheduling.nodeSelector")
	}
	for k, v := range rc.Scheduling.NodeSelector {
		if ds.Spec.Template.Spec.NodeSelector[k] != v {
			t.Errorf("RuntimeClass selects nodes with %s=%s, the installer does not run only there (%v)", k, v, ds.Spec.Template.Spec.NodeSelector)
		}
	}
}

// installerFlags parses the installer's arguments as it does.
func installerFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("installer without arguments")
	}
	fl := flag.NewFlagSet("installer", flag.ContinueOnError)
	m := map[string]string{"mode": args[0]}
	for _, name := range []string{"host-root", "bin-dir", "config-dir", "containerd-config", "bin-source", "snippet", "restart", "unit"} {
		fl.Func(name, "", func(v string) error { m[name] = v; return nil })
	}
	fl.BoolFunc("wait", "", func(string) error { m["wait"] = "true"; return nil })
	if err := fl.Parse(args[1:]); err != nil || fl.NArg() != 0 {
		t.Fatalf("installer arguments %q: %v", args, err)
	}
	return m
}

func TestInstallerDaemonSet(t *testing.T) {
	ns, ds := installer(t)
	if ds.Namespace != ns.Name {
		t.Errorf("DaemonSet in namespace %q, the file creates %q", ds.Namespace, ns.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("the installer is not privileged")
	}
	if !slices.Equal(c.Command, []string{"/nebula-installer"}) {
		t.Errorf("command %q", c.Command)
	}
	f := installerFlags(t, c.Args)
	if f["mode"] != "install" || f["wait"] != "true" || f["restart"] != "systemd" {
		t.Errorf("installer runs %v; want install --wait --restart=systemd", f)
	}
	// The readiness probe checks what install installs.
	if c.ReadinessProbe == nil || c.ReadinessProbe.Exec == nil || len(c.ReadinessProbe.Exec.Command) < 2 || c.ReadinessProbe.Exec.Command[0] != c.Command[0] {
		t.Fatalf("readiness probe %+v, want an exec of the installer's check", c.ReadinessProbe)
	}
	check := installerFlags(t, c.ReadinessProbe.Exec.Command[1:])
	for _, k := range []string{"host-root", "bin-dir", "config-dir", "containerd-config", "bin-source", "snippet"} {
		if check[k] != f[k] {
			t.Errorf("check --%s=%q, install --%s=%q", k, check[k], k, f[k])
		}
	}
	if check["mode"] != "check" {
		t.Errorf("readiness probe runs %q, want check", check["mode"])
	}
	// Each node path the installer writes is under a hostPath volume
	// mounted at the same path under --host-root.
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounted := func(nodePath, inPod string) bool {
		for _, m := range c.VolumeMounts {
			hp, ok := hostPaths[m.Name]
			if !ok || m.ReadOnly {
				continue
			}
			if rel, err := filepath.Rel(hp, nodePath); err == nil && !strings.HasPrefix(rel, "..") &&
				filepath.Join(m.MountPath, rel) == inPod {
				return true
			}
		}
		return false
	}
	for _, p := range []string{f["bin-dir"], f["config-dir"], filepath.Dir(f["containerd-config"])} {
		if !mounted(p, filepath.Join(f["host-root"], p)) {
			t.Errorf("the node's %s is not mounted writable at %s", p, filepath.Join(f["host-root"], p))
		}
	}
	if !mounted("/run/systemd", "/run/systemd") {
		t.Errorf("--restart=systemd needs the node's /run/systemd at /run/systemd (its private socket)")
	}
	if c.Image != "localhost/nebula/installer:v1" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pull %q; want localhost/nebula/installer:v1 (built by build.sh), IfNotPresent", c.Image, c.ImagePullPolicy)
	}
}

// TestInstallerImage builds the installer's image with build.sh and checks
// it against the DaemonSet: its name, entrypoint, and the files the
// installer's flags name.
func TestInstallerImage(t *testing.T) {
	_, ds := installer(t)
	c := ds.Spec.Template.Spec.Containers[0]
	f := installerFlags(t, c.Args)
	out := filepath.Join(t.TempDir(), "installer.tar")
	cmd := exec.Command("installer/build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installer/build.sh: %v\n%s", err, b)
	}
	var manifest []struct{ RepoTags []string }
	readFromTar(t, out, "manifest.json", &manifest)
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{c.Image}) {
		t.Errorf("build.sh made %+v, the DaemonSet runs %s", manifest, c.Image)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, c.Command) {
		t.Errorf("image entrypoint %q, DaemonSet command %q", cfg.Config.Entrypoint, c.Command)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files["/"+strings.TrimPrefix(path.Clean(h.Name), "/")] = b
	}
	for _, bin := range []string{"containerd-shim-nebula-v1", "nebula-host"} {
		if len(files[path.Join(f["bin-source"], bin)]) == 0 {
			t.Errorf("the image has no %s in --bin-source %s", bin, f["bin-source"])
		}
	}
	snippet, _ := os.ReadFile("containerd/nebula.toml")
	if !bytes.Equal(files[f["snippet"]], snippet) {
		t.Errorf("the image's %s (--snippet) is not containerd/nebula.toml", f["snippet"])
	}
}

func readFromTar(t *testing.T, archive, name string, v any) {
	t.Helper()
	fh, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tr := tar.NewReader(fh)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no %s (%v)", archive, name, err)
		}
		if path.Clean(h.Name) == name {
			if err := json.NewDecoder(tr).Decode(v); err != nil {
				t.Fatalf("%s: %s: %v", archive, name, err)
			}
			return
		}
	}
}

// Knative Serving's Service (serving.knative.dev/v1), mirrored: the
// revision template's spec is a corev1.PodSpec plus Knative's fields.
type knativeService struct {
	typeMeta `json:",inline"`
	Metadata metav1.ObjectMeta  `json:"metadata"`
	Spec     knativeServiceSpec `json:"spec"`
	Status   *json.RawMessage   `json:"status,omitempty"`
}

type knativeServiceSpec struct {
	Template struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			corev1.PodSpec              `json:",inline"`
			ContainerConcurrency        *int64 `json:"containerConcurrency,omitempty"`
			TimeoutSeconds              *int64 `json:"timeoutSeconds,omitempty"`
			ResponseStartTimeoutSeconds *int64 `json:"responseStartTimeoutSeconds,omitempty"`
			IdleTimeoutSeconds          *int64 `json:"idleTimeoutSeconds,omitempty"`
		} `json:"spec"`
	} `json:"template"`
	Traffic []struct {
		Tag               string `json:"tag,omitempty"`
		RevisionName      string `json:"revisionName,omitempty"`
		ConfigurationName string `json:"configurationName,omitempty"`
		LatestRevision    *bool  `json:"latestRevision,omitempty"`
		Percent           *int64 `json:"percent,omitempty"`
		URL               string `json:"url,omitempty"`
	} `json:"traffic,omitempty"`
}

// Knative Eventing's Trigger (eventing.knative.dev/v1), mirrored.
type knativeTrigger struct {
	typeMeta `json:",inline"`
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes,omitempty"`
		} `json:"filter,omitempty"`
		Subscriber struct {
			Ref *struct {
				Kind       string `json:"kind"`
				Namespace  string `json:"namespace,omitempty"`
				Name       string `json:"name"`
				APIVersion string `json:"apiVersion"`
			} `json:"ref,omitempty"`
			URI string `json:"uri,omitempty"`
		} `json:"subscriber"`
		Delivery *struct {
			DeadLetterSink *json.RawMessage `json:"deadLetterSink,omitempty"`
			Retry          *int32           `json:"retry,omitempty"`
			Timeout        *string          `json:"timeout,omitempty"`
			BackoffPolicy  *string          `json:"backoffPolicy,omitempty"`
			BackoffDelay   *string          `json:"backoffDelay,omitempty"`
			RetryAfterMax  *string          `json:"retryAfterMax,omitempty"`
		} `json:"delivery,omitempty"`
	} `json:"spec"`
}

// The Prometheus Operator's PodMonitor (monitoring.coreos.com/v1),
// mirrored for the fields used.
type podMonitor struct {
	typeMeta `json:",inline"`
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		JobLabel          string   `json:"jobLabel,omitempty"`
		PodTargetLabels   []string `json:"podTargetLabels,omitempty"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port          string       `json:"port,omitempty"`
			Path          string       `json:"path,omitempty"`
			Scheme        string       `json:"scheme,omitempty"`
			Interval      string       `json:"interval,omitempty"`
			ScrapeTimeout string       `json:"scrapeTimeout,omitempty"`
			Relabelings   []relabeling `json:"relabelings,omitempty"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type relabeling struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

func service(t *testing.T) knativeService {
	t.Helper()
	var s knativeService
	one(t, "knative/service.yaml", &s)
	return s
}

func TestKnativeService(t *testing.T) {
	s := service(t)
	if s.APIVersion != "serving.knative.dev/v1" || s.Kind != "Service" {
		t.Errorf("service.yaml is %s %s", s.APIVersion, s.Kind)
	}
	var rc nodev1.RuntimeClass
	one(t, "kubernetes/runtimeclass.yaml", &rc)
	pod := s.Spec.Template.Spec
	if pod.RuntimeClassName == nil || *pod.RuntimeClassName != rc.Name {
		t.Errorf("runtimeClassName %v, want %q", pod.RuntimeClassName, rc.Name)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; Knative Serving takes one serving container", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != oci.DefaultPort {
		t.Errorf("ports %+v; want one, %d (oci.DefaultPort)", c.Ports, oci.DefaultPort)
	}
	for _, p := range c.Ports {
		if slices.Contains(oci.KnativeReservedPorts, int(p.ContainerPort)) {
			t.Errorf("port %d is reserved by Knative", p.ContainerPort)
		}
		if p.Name != "" && p.Name != "http1" && p.Name != "h2c" {
			t.Errorf("port name %q: Knative allows http1 or h2c", p.Name)
		}
	}
	// Knative resolves the tag of an image outside the registries it
	// skips by default, and takes only a first component with "." or ":"
	// for a registry ("localhost/..." is a public-registry repository).
	if !strings.HasPrefix(c.Image, "dev.local/nebula/") {
		t.Errorf("image %q: the Knative example uses a local image in a registry Knative does not resolve tags in (dev.local/nebula/...)", c.Image)
	}

	// Knobs: env on the user container, valid, function mode; no
	// nebula.dev/ annotation on the revision (it would reach queue-proxy).
	spec := &specs.Spec{Process: &specs.Process{}}
	for _, e := range c.Env {
		switch {
		case e.Name == "PORT" || strings.HasPrefix(e.Name, "K_") && slices.Contains([]string{"K_SERVICE", "K_CONFIGURATION", "K_REVISION"}, e.Name):
			t.Errorf("env %s is reserved: Knative sets it", e.Name)
		case strings.HasPrefix(e.Name, oci.EnvPrefix):
			known := false
			for _, k := range oci.KnobNames() {
				known = known || oci.EnvName(k) == e.Name
			}
			if !known {
				t.Errorf("env %s is not one of Nebula's knobs (%v)", e.Name, oci.KnobNames())
			}
		}
		spec.Process.Env = append(spec.Process.Env, e.Name+"="+e.Value)
	}
	for a := range s.Spec.Template.Metadata.Annotations {
		if strings.HasPrefix(a, oci.AnnotationPrefix) {
			t.Errorf("revision annotation %s: pod_annotations pass it to queue-proxy too; set the knob as env", a)
		}
	}
	knobs, err := oci.ParseKnobs(spec)
	if err != nil {
		t.Errorf("knobs: %v", err)
	}
	if knobs.Mode != oci.ModeFunction {
		t.Errorf("mode %q, want function", knobs.Mode)
	}
	if knobs.MetricsPort != 0 && knobs.MetricsPort != oci.DefaultMetricsPort {
		t.Errorf("metrics port %d; the PodMonitor scrapes %d", knobs.MetricsPort, oci.DefaultMetricsPort)
	}
	if s.Spec.Template.Spec.TimeoutSeconds != nil && knobs.Timeout != 0 &&
		knobs.Timeout.Seconds() > float64(*s.Spec.Template.Spec.TimeoutSeconds) {
		t.Errorf("NEBULA_TIMEOUT %v exceeds the revision's timeoutSeconds %d", knobs.Timeout, *s.Spec.Template.Spec.TimeoutSeconds)
	}
	if got := s.Spec.Template.Metadata.Annotations["prometheus.io/port"]; got != strconv.Itoa(oci.DefaultMetricsPort) {
		t.Errorf("prometheus.io/port %q, want %d", got, oci.DefaultMetricsPort)
	}

	// The probes' paths are answered by the front door.
	srv := frontDoor(t)
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("probe %+v: want an httpGet on the user port", p)
			continue
		}
		if p.HTTPGet.Port.IntValue() != 0 && p.HTTPGet.Port.IntValue() != oci.DefaultPort {
			t.Errorf("probe port %v; Knative probes the user port", p.HTTPGet.Port)
		}
		if code := get(srv.Handler(), p.HTTPGet.Path, map[string]string{"User-Agent": "kube-probe/1.34"}); code != 200 {
			t.Errorf("GET %s answers %d, want 200", p.HTTPGet.Path, code)
		}
	}
	if code := get(srv.MetricsHandler(), "/metrics", nil); code != 200 {
		t.Errorf("GET /metrics: %d", code)
	}
}

func TestKnativeConfig(t *testing.T) {
	var cm corev1.ConfigMap
	one(t, "knative/config-features.yaml", &cm)
	if cm.Kind != "ConfigMap" || cm.Name != "config-features" || cm.Namespace != "knative-serving" ||
		cm.Data["kubernetes.podspec-runtimeclassname"] != "enabled" {
		t.Errorf("config-features.yaml: %s %s/%s %v; want knative-serving/config-features enabling kubernetes.podspec-runtimeclassname",
			cm.Kind, cm.Namespace, cm.Name, cm.Data)
	}
}

func TestKnativeTrigger(t *testing.T) {
	var tr knativeTrigger
	one(t, "knative/trigger.yaml", &tr)
	s := service(t)
	ref := tr.Spec.Subscriber.Ref
	if tr.APIVersion != "eventing.knative.dev/v1" || tr.Kind != "Trigger" || tr.Spec.Broker == "" {
		t.Errorf("trigger.yaml: %s %s broker %q", tr.APIVersion, tr.Kind, tr.Spec.Broker)
	}
	if ref == nil || ref.APIVersion != s.APIVersion || ref.Kind != s.Kind || ref.Name != s.Metadata.Name ||
		(ref.Namespace != "" && ref.Namespace != s.Metadata.Namespace) || tr.Metadata.Namespace != s.Metadata.Namespace {
		t.Errorf("trigger subscriber %+v in %s; want service.yaml's %s/%s", ref, tr.Metadata.Namespace, s.Metadata.Namespace, s.Metadata.Name)
	}
	if tr.Spec.Filter == nil || !strings.HasPrefix(tr.Spec.Filter.Attributes["type"], "probe.") {
		t.Errorf("filter %+v: want an event type the probe function handles", tr.Spec.Filter)
	}
}

func TestPodMonitor(t *testing.T) {
	var pm podMonitor
	one(t, "prometheus/podmonitor.yaml", &pm)
	if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Kind != "PodMonitor" || !pm.Spec.NamespaceSelector.Any {
		t.Errorf("podmonitor.yaml: %s %s, any namespace %v", pm.APIVersion, pm.Kind, pm.Spec.NamespaceSelector.Any)
	}
	s := service(t)
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(s.Spec.Template.Metadata.Labels)) {
		t.Errorf("selector %v does not select service.yaml's pods (labels %v): %v", pm.Spec.Selector, s.Spec.Template.Metadata.Labels, err)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Path != "/metrics" {
		t.Errorf("path %q", ep.Path)
	}
	container := s.Spec.Template.Spec.Containers[0].Name
	var kept, readdressed bool
	for _, r := range ep.Relabelings {
		switch {
		case r.Action == "keep" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_container_name"}):
			kept = regexp.MustCompile("^(?:" + r.Regex + ")$").MatchString(container)
		case r.TargetLabel == "__address__":
			readdressed = r.Replacement != nil && strings.HasSuffix(*r.Replacement, ":"+strconv.Itoa(oci.DefaultMetricsPort))
		}
	}
	if !kept || !readdressed {
		t.Errorf("relabelings keep container %q: %v, address :%d: %v", container, kept, oci.DefaultMetricsPort, readdressed)
	}
}

// registered returns the metric families package events registers, by
// name, with their types.
func registered(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := events.New(nopInvoker{}, events.NewConfig().WithFunction("f").WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]dto.MetricType{}
	for _, f := range fams {
		m[f.GetName()] = f.GetType()
	}
	if len(m) < 8 {
		t.Fatalf("events registers %d families: %v", len(m), m)
	}
	return m
}

var metricName = regexp.MustCompile(`\bnebula_[a-zA-Z0-9_]+`)

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/nebula-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("nebula-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard %q uid %q with %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	fams := registered(t)
	queries := []string{}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			queries = append(queries, v.Definition)
		}
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries = append(queries, q.Expr)
		}
	}
	for _, q := range queries {
		names := metricName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("query %q uses no Nebula metric", q)
		}
		if strings.Count(q, "(") != strings.Count(q, ")") || strings.Count(q, "{") != strings.Count(q, "}") {
			t.Errorf("query %q: unbalanced brackets", q)
		}
		for _, n := range names {
			if _, ok := fams[n]; ok {
				continue
			}
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if fams[base] != dto.MetricType_HISTOGRAM || base == n {
				t.Errorf("query %q: %s is not a metric package events registers", q, n)
			}
		}
	}
	// Per-invocation start-up and execution percentiles, by runtime.
	for _, h := range []string{"nebula_invocation_startup_seconds", "nebula_invocation_execution_seconds"} {
		for _, quantile := range []string{"0.5", "0.99"} {
			want := "histogram_quantile(" + quantile + ", sum by (le, runtime) (rate(" + h + "_bucket{"
			if !slices.ContainsFunc(queries, func(q string) bool { return strings.Contains(q, want) }) {
				t.Errorf("no query %s...", want)
			}
		}
		// The means: a Prometheus that ingests native histograms only has
		// no _sum and _count series; histogram_avg of the native
		// histogram answers there.
		for _, want := range []string{"rate(" + h + "_sum{", "histogram_avg(sum by (runtime) (rate(" + h + "{"} {
			if !slices.ContainsFunc(queries, func(q string) bool { return strings.Contains(q, want) }) {
				t.Errorf("no query with %s...", want)
			}
		}
	}
}

type nopInvoker struct{}

func (nopInvoker) Runtime() string { return abi.RuntimeWasm }
func (nopInvoker) Invoke(context.Context, *abi.Request) (*abi.Response, error) {
	return &abi.Response{}, nil
}

func frontDoor(t *testing.T) *events.Server {
	t.Helper()
	srv, err := events.New(nopInvoker{}, events.NewConfig().WithFunction("f").WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// get returns the status h answers GET path with.
func get(h http.Handler, path string, header map[string]string) int {
	req := httptest.NewRequest("GET", path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}
