package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Knative Serving on a Cluster, installed from its own manifests:
//
//	k := harness.StartKubernetes(t)
//	kn := harness.InstallKnative(t, k)   // controllers as pods, images from nebula build
//	k.MustKubectl(t, "apply", "-f", "deploy/knative/service.yaml")
//
// hack/install-knative.sh builds Serving's binaries from the
// knative.dev/serving module and copies the manifests a release is made
// of: config/core, and the CRDs and config-network of the networking and
// caching modules Serving requires. InstallKnative packages each binary
// as an image with `nebula build --user 65532:65532` (Knative's pods run
// with runAsNonRoot), named dev.local/knative/NAME:vVERSION (dev.local is
// a registry Knative does not resolve tags in), imports it into the
// node's containerd and puts it where the manifests say ko://...; then it
// applies the manifests in dependency order, waits for the controllers to
// be Available and for the webhook to have installed its certificate.
//
// There is no cluster DNS: the one name a controller dials (the
// activator's websocket to the autoscaler) is given to the activator's pod
// as a hostAliases entry for the autoscaler Service's ClusterIP. There is
// no ingress either, so a Route never becomes Ready.
//
// When the test ends, Knative Services the test left are deleted (and
// reported), then everything the manifests made, and the test fails if
// any of it is left.

// DefaultKnativeVersion is the Knative Serving release tests use unless
// NEBULA_KNATIVE_VERSION says otherwise.
const DefaultKnativeVersion = "0.47.0"

// KnativeVersion is the Knative Serving release under test
// (NEBULA_KNATIVE_VERSION, default DefaultKnativeVersion).
func KnativeVersion() string {
	if v := os.Getenv("NEBULA_KNATIVE_VERSION"); v != "" {
		return v
	}
	return DefaultKnativeVersion
}

// KnativeDir is where hack/install-knative.sh put Serving's binaries (bin/)
// and manifests (config/): $NEBULA_KNATIVE_DIR, by default
// /var/cache/nebula/knative-vVERSION.
func KnativeDir() string {
	if dir := os.Getenv("NEBULA_KNATIVE_DIR"); dir != "" {
		return dir
	}
	return "/var/cache/nebula/knative-v" + KnativeVersion()
}

// knativeComponents are the binaries hack/install-knative.sh builds, by
// their directory under knative.dev/serving/cmd.
var knativeComponents = []string{"controller", "webhook", "activator", "autoscaler", "queue"}

// KnativeNamespace is the namespace Serving's manifests install into.
const KnativeNamespace = "knative-serving"

// Knative is Knative Serving installed on a Cluster.
type Knative struct {
	// Version is the Serving release.
	Version string
	// Images maps each component (controller, webhook, activator,
	// autoscaler, queue) to its image on the node.
	Images map[string]string

	cluster *Cluster
	// phases are the manifests' objects in the order they are applied.
	phases [][]map[string]any
	dir    string
}

// KnativeImage is the name of component's image on the node.
func KnativeImage(component string) string {
	return "dev.local/knative/" + component + ":v" + KnativeVersion()
}

// InstallKnative installs Knative Serving on k from the manifests
// hack/install-knative.sh copied, with images made by `nebula build` from
// the binaries it built, and returns once its four controllers are
// Available and its webhooks serve. Its teardown runs before k's.
func InstallKnative(t T, k *Cluster) *Knative {
	t.Helper()
	began := time.Now()
	root := KnativeDir()
	for _, c := range knativeComponents {
		if _, err := os.Stat(filepath.Join(root, "bin", c)); err != nil {
			t.Fatalf("Knative Serving %s: %s is not built (%v): run hack/install-knative.sh", KnativeVersion(), c, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "config", ".complete")); err != nil {
		t.Fatalf("Knative Serving %s: no manifests in %s (%v): run hack/install-knative.sh", KnativeVersion(), root, err)
	}
	dir, err := os.MkdirTemp("", "nbknative-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	kn := &Knative{Version: KnativeVersion(), Images: map[string]string{}, cluster: k, dir: dir}
	t.Cleanup(func() { kn.uninstall(t) })

	kn.importImages(t, root)
	objs, err := knativeObjects(filepath.Join(root, "config"), kn.Images)
	if err != nil {
		t.Fatalf("Knative's manifests: %v", err)
	}
	crds := kn.split(objs)
	base, workloads, webhooks := kn.phases[0], kn.phases[1], kn.phases[2]
	kn.apply(t, base)
	k.MustKubectl(t, append([]string{"wait", "--for=condition=Established", "--timeout=100s"}, crds...)...)
	kn.addAutoscalerAlias(t, workloads)
	kn.apply(t, workloads)
	kn.apply(t, webhooks)
	kn.waitReady(t)
	t.Logf("Knative Serving %s installed in %v", kn.Version, time.Since(began).Round(time.Second))
	return kn
}

// importImages makes an image of each of Knative's binaries with nebula
// build (a numeric non-root user, as its pods' runAsNonRoot requires) and
// imports it into the node's containerd.
func (kn *Knative) importImages(t T, root string) {
	t.Helper()
	k := kn.cluster
	for _, c := range knativeComponents {
		kn.Images[c] = KnativeImage(c)
		archive := filepath.Join(kn.dir, c+".tar")
		args := []string{"build", filepath.Join(root, "bin", c), "-t", kn.Images[c], "--user", "65532:65532", "-o", archive}
		if out, err := exec.Command(filepath.Join(k.BinDir, "nebula"), args...).CombinedOutput(); err != nil {
			t.Fatalf("nebula %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		k.mustCtrCRI(t, "images", "import", archive)
	}
}

// split sorts the manifests' objects into kn.phases and returns the CRDs'
// names.
func (kn *Knative) split(objs []map[string]any) (crds []string) {
	// Phases: what the controllers need (CRDs, RBAC, ConfigMaps,
	// Services); the controllers and the custom resources of the
	// manifests; last the webhooks, which refuse every request until the
	// webhook's pod serves them.
	var base, workloads, webhooks []map[string]any
	for _, o := range objs {
		switch objKind(o) {
		case "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Image", "Certificate":
			workloads = append(workloads, o)
		case "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
			webhooks = append(webhooks, o)
		case "CustomResourceDefinition":
			crds = append(crds, "crd/"+objName(o))
			fallthrough
		default:
			base = append(base, o)
		}
	}
	kn.phases = [][]map[string]any{base, workloads, webhooks}
	return crds
}

// addAutoscalerAlias gives the activator a hosts entry for the
// autoscaler's Service: there is no cluster DNS.
func (kn *Knative) addAutoscalerAlias(t T, workloads []map[string]any) {
	t.Helper()
	autoscalerIP := strings.TrimSpace(kn.cluster.MustKubectl(t, "-n", KnativeNamespace, "get", "service", "autoscaler", "-o", "jsonpath={.spec.clusterIP}"))
	for _, o := range workloads {
		if objKind(o) == "Deployment" && objName(o) == "activator" {
			spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			spec["hostAliases"] = []any{map[string]any{
				"ip": autoscalerIP, "hostnames": []any{"autoscaler." + KnativeNamespace + ".svc.cluster.local"},
			}}
		}
	}
}

// waitReady waits for the controllers' rollouts and for the webhook's
// certificate.
func (kn *Knative) waitReady(t T) {
	t.Helper()
	k := kn.cluster
	workloads, webhooks := kn.phases[1], kn.phases[2]
	for _, o := range workloads {
		if objKind(o) == "Deployment" {
			k.MustKubectl(t, "-n", KnativeNamespace, "rollout", "status", "deployment/"+objName(o), "--timeout=5m")
		}
	}
	// The webhook writes its CA into the webhook configurations once it
	// runs; until then the API server cannot call it.
	for _, o := range webhooks {
		k.WaitFor(t, "the webhook's certificate in "+objName(o), 2*time.Minute, func() (bool, string) {
			r := k.Kubectl(t, "get", strings.ToLower(objKind(o)), objName(o), "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
			return r.ExitCode == 0 && strings.TrimSpace(r.Stdout) != "", r.Stderr
		})
	}
}

// apply applies objs as one List with kubectl.
func (kn *Knative) apply(t T, objs []map[string]any) {
	t.Helper()
	kn.cluster.MustKubectlStdin(t, list(t, objs), "apply", "-f", "-")
}

// ControllerLog returns the last n lines of the log of Knative's component
// ("controller", "activator", ...), from its pod.
func (kn *Knative) ControllerLog(t T, component string, n int) string {
	t.Helper()
	r := kn.cluster.Kubectl(t, "-n", KnativeNamespace, "logs", "deployment/"+component, fmt.Sprintf("--tail=%d", n))
	return r.Stdout + r.Stderr
}

// uninstall deletes the Knative Services, Configurations and Routes the
// test left (failing it), then every object of the manifests, the
// namespace last, and fails t for any left.
func (kn *Knative) uninstall(t T) {
	k := kn.cluster
	defer os.RemoveAll(kn.dir)
	if !k.running("kube-apiserver") || len(kn.phases) == 0 {
		return
	}
	if t.Failed() {
		for _, c := range []string{"controller", "autoscaler", "activator", "webhook"} {
			t.Logf("knative %s log (tail):\n%s", c, kn.ControllerLog(t, c, 30))
		}
	}
	kn.deleteLeftServices(t)
	kn.deleteManifests(t)
}

// deleteLeftServices deletes the Knative Services, Configurations and
// Routes a test left, failing it, and waits for their Revisions' pods.
// Knative's own objects go first, while its controllers and webhook run:
// their finalizers and the webhook's DELETE validation need them.
func (kn *Knative) deleteLeftServices(t T) {
	k := kn.cluster
	left := strings.Fields(k.Kubectl(t, "get", "services.serving.knative.dev,configurations.serving.knative.dev,routes.serving.knative.dev",
		"--all-namespaces", "--no-headers", "-o", "custom-columns=NS:.metadata.namespace,NAME:.metadata.name").Stdout)
	if len(left) > 0 {
		if !t.Failed() {
			t.Errorf("the test left Knative objects %v; deleting them", left)
		}
		if r := k.Kubectl(t, "delete", "services.serving.knative.dev,configurations.serving.knative.dev,routes.serving.knative.dev",
			"--all", "--all-namespaces", "--wait", "--timeout=2m"); r.ExitCode != 0 {
			t.Errorf("deleting Knative objects: %s%s", r.Stdout, r.Stderr)
		}
		// Their Revisions' pods go after them, on the controllers' time.
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			r := k.Kubectl(t, "get", "pods", "--all-namespaces", "-l", "serving.knative.dev/revision", "-o", "name")
			if r.ExitCode == 0 && strings.TrimSpace(r.Stdout) == "" {
				break
			}
			time.Sleep(time.Second)
		}
	}
}

// deleteManifests deletes every object of the manifests, the namespace
// last, and fails t for any left.
func (kn *Knative) deleteManifests(t T) {
	k := kn.cluster
	webhooks, workloads, base := kn.phases[2], kn.phases[1], kn.phases[0]
	kn.delete(t, webhooks)
	// The controllers' pods, quickly: the activator's grace period (600 s)
	// is for draining requests, and there are none.
	kn.delete(t, workloads, "--cascade=orphan")
	k.Kubectl(t, "-n", KnativeNamespace, "delete", "replicasets", "--all", "--cascade=orphan", "--wait")
	if r := k.Kubectl(t, "-n", KnativeNamespace, "delete", "pods", "--all", "--grace-period=5", "--wait", "--timeout=2m"); r.ExitCode != 0 {
		t.Errorf("deleting Knative's pods: %s%s", r.Stdout, r.Stderr)
	}
	// The namespace last: deleting it deletes what the controllers made
	// in it (leases, the webhook's certificates).
	var ns []map[string]any
	var rest []map[string]any
	for _, o := range base {
		if objKind(o) == "Namespace" {
			ns = append(ns, o)
		} else {
			rest = append(rest, o)
		}
	}
	kn.delete(t, rest)
	kn.delete(t, ns)
	all := slices.Concat(base, workloads, webhooks)
	r := k.KubectlStdin(t, list(t, all), "get", "-f", "-", "--ignore-not-found", "-o", "name")
	if strings.TrimSpace(r.Stdout) != "" {
		t.Errorf("leak: Knative objects left after uninstalling:\n%s", r.Stdout)
	}
	if r.ExitCode != 0 && !strings.Contains(r.Stderr, "the server doesn't have a resource type") {
		t.Errorf("listing Knative's objects after uninstalling: %s", r.Stderr)
	}
	if out := k.Kubectl(t, "get", "crd", "-o", "name").Stdout; strings.Contains(out, "knative.dev") {
		t.Errorf("leak: Knative CRDs left:\n%s", out)
	}
}

// delete deletes objs with kubectl, waiting until they are gone.
func (kn *Knative) delete(t T, objs []map[string]any, args ...string) {
	if len(objs) == 0 {
		return
	}
	args = append([]string{"delete", "-f", "-", "--ignore-not-found", "--wait", "--timeout=3m"}, args...)
	if r := kn.cluster.KubectlStdin(t, list(t, objs), args...); r.ExitCode != 0 {
		t.Errorf("kubectl %s: %s%s", strings.Join(args, " "), r.Stdout, r.Stderr)
	}
}

// knativeObjects reads every YAML document under dir (config/core and
// the networking and caching modules' config), drops the empty ones,
// and replaces each ko://knative.dev/serving/cmd/NAME image reference by
// images[NAME].
func knativeObjects(dir string, images map[string]string) ([]map[string]any, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var objs []map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range yamlDocuments.Split(string(b), -1) {
			var o map[string]any
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
			}
			if len(o) == 0 {
				continue
			}
			if err := replaceKo(o, images); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			objs = append(objs, o)
		}
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no objects in %s", dir)
	}
	return objs, nil
}

var yamlDocuments = regexp.MustCompile(`(?m)^---[ \t]*$`)

// replaceKo replaces, anywhere in v, a string ko://knative.dev/serving/cmd/NAME
// by images[NAME].
func replaceKo(v any, images map[string]string) error {
	const prefix = "ko://knative.dev/serving/cmd/"
	var err error
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for key, e := range v {
				v[key] = walk(e)
			}
		case []any:
			for i, e := range v {
				v[i] = walk(e)
			}
		case string:
			if c, ok := strings.CutPrefix(v, prefix); ok {
				if img, ok := images[c]; ok {
					return img
				}
				err = fmt.Errorf("no image for %s", v)
			}
		}
		return v
	}
	walk(v)
	return err
}

func objKind(o map[string]any) string { s, _ := o["kind"].(string); return s }

func objName(o map[string]any) string {
	m, _ := o["metadata"].(map[string]any)
	s, _ := m["name"].(string)
	return s
}

// list is objs as a JSON v1 List for kubectl -f -.
func list(t T, objs []map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(bytes.TrimSpace(b))
}
