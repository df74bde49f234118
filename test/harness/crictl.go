package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultCrictlVersion is the crictl tests use unless NEBULA_CRICTL_VERSION
// says otherwise (hack/install-tools.sh builds it into /var/cache/nebula/tools).
const DefaultCrictlVersion = "1.34.0"

// CrictlVersion is the crictl under test (NEBULA_CRICTL_VERSION, default
// DefaultCrictlVersion).
func CrictlVersion() string {
	if v := os.Getenv("NEBULA_CRICTL_VERSION"); v != "" {
		return v
	}
	return DefaultCrictlVersion
}

// CrictlTool returns the path of the pinned crictl, failing t if it is not
// installed.
func CrictlTool(t T) string {
	t.Helper()
	dir, err := ToolsDir()
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := filepath.Join(dir, "crictl-"+CrictlVersion(), "bin", "crictl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("crictl %s is not installed (%v): run `make tools`", CrictlVersion(), err)
	}
	return p
}

// Crictl runs crictl against the daemon as a user types it (`crictl
// --runtime-endpoint unix://SOCK --image-endpoint unix://SOCK --timeout 2m
// args...`), with stdin from /dev/null. The timeout is the kubelet's
// runtime-request-timeout: crictl's default of 2 s is shorter than a
// wasm container's first start (the module is compiled at Create) on a
// busy two-core machine.
func (c *CRI) Crictl(t T, args ...string) Result {
	t.Helper()
	ep := "unix://" + c.Address
	return runTool(t, nil, c.crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "2m"}, args...)...)
}

// MustCrictl runs crictl and fails t unless it exits 0; it returns stdout.
func (c *CRI) MustCrictl(t T, args ...string) string {
	t.Helper()
	r := c.Crictl(t, args...)
	if r.ExitCode != 0 {
		t.Fatalf("crictl %s: exit %d\nstdout: %s\nstderr: %s\n%s", strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr, c.LogTail(40))
	}
	return r.Stdout
}

// PodSpec is what RunPod puts in crictl's pod sandbox config.
type PodSpec struct {
	Name        string
	Annotations map[string]string
	Labels      map[string]string
}

// Pod is a running pod sandbox.
type Pod struct {
	ID   string
	Name string
	// IP is the pod's address on the test's bridge.
	IP string
	// ConfigPath is the pod sandbox config given to `crictl runp`, which
	// `crictl create` takes again.
	ConfigPath string
	// LogDir is the pod's log_directory.
	LogDir string
}

// RunPod runs a pod with the nebula runtime handler (`crictl runp
// --runtime nebula pod.json`) and returns it once it has an IP on the
// test's bridge.
func (c *CRI) RunPod(t T, spec PodSpec) *Pod {
	t.Helper()
	dir := filepath.Join(c.Dir, "cri-configs")
	logDir := filepath.Join(c.Dir, "pod-logs", spec.Name)
	for _, d := range []string{dir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	config := map[string]any{
		"metadata": map[string]any{
			"name": spec.Name, "namespace": "nebula-e2e", "uid": "uid-" + spec.Name + "-" + randomHex(4), "attempt": 0,
		},
		"hostname":      spec.Name,
		"log_directory": logDir,
		"annotations":   spec.Annotations,
		"labels":        spec.Labels,
		"linux": map[string]any{
			"cgroup_parent": c.CgroupParent,
		},
	}
	path := filepath.Join(dir, "pod-"+spec.Name+".json")
	writeJSON(t, path, config)
	id := strings.TrimSpace(c.MustCrictl(t, "runp", "--runtime", RuntimeHandler, path))
	p := &Pod{ID: id, Name: spec.Name, ConfigPath: path, LogDir: logDir}
	p.IP = c.InspectPod(t, id).Status.Network.IP
	if !c.Net.Contains(p.IP) {
		t.Fatalf("pod %s got IP %q, not on the test's network %s", spec.Name, p.IP, c.Net.Subnet)
	}
	return p
}

// ContainerSpec is what CreateContainer puts in crictl's container config.
type ContainerSpec struct {
	Name        string
	Image       string
	Command     []string
	Args        []string
	Env         map[string]string
	Annotations map[string]string
}

// CreateContainer creates a container in pod (`crictl create POD
// container.json pod.json`) and returns its ID; it is not started.
func (c *CRI) CreateContainer(t T, pod *Pod, spec ContainerSpec) string {
	t.Helper()
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envs := make([]map[string]string, 0, len(keys))
	for _, k := range keys {
		envs = append(envs, map[string]string{"key": k, "value": spec.Env[k]})
	}
	config := map[string]any{
		"metadata":    map[string]any{"name": spec.Name, "attempt": 0},
		"image":       map[string]any{"image": spec.Image},
		"command":     spec.Command,
		"args":        spec.Args,
		"envs":        envs,
		"annotations": spec.Annotations,
		"log_path":    spec.Name + ".log",
		"linux":       map[string]any{},
	}
	path := filepath.Join(c.Dir, "cri-configs", "ctr-"+pod.Name+"-"+spec.Name+".json")
	writeJSON(t, path, config)
	return strings.TrimSpace(c.MustCrictl(t, "create", pod.ID, path, pod.ConfigPath))
}

// PodInspect is the part of `crictl inspectp -o json` tests look at.
type PodInspect struct {
	Status struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Network struct {
			IP string `json:"ip"`
		} `json:"network"`
		RuntimeHandler string `json:"runtimeHandler"`
	} `json:"status"`
	Info struct {
		Pid         int    `json:"pid"`
		RuntimeType string `json:"runtimeType"`
		Image       string `json:"image"`
	} `json:"info"`
}

// InspectPod runs `crictl inspectp -o json ID`.
func (c *CRI) InspectPod(t T, id string) PodInspect {
	t.Helper()
	var p PodInspect
	out := c.MustCrictl(t, "inspectp", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("crictl inspectp: %v\n%s", err, out)
	}
	return p
}

// ContainerInspect is the part of `crictl inspect -o json` tests look at.
type ContainerInspect struct {
	Status struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		LogPath  string `json:"logPath"`
	} `json:"status"`
	Info struct {
		Pid         int    `json:"pid"`
		SandboxID   string `json:"sandboxID"`
		RuntimeType string `json:"runtimeType"`
	} `json:"info"`
}

// InspectContainer runs `crictl inspect -o json ID`.
func (c *CRI) InspectContainer(t T, id string) ContainerInspect {
	t.Helper()
	var ci ContainerInspect
	out := c.MustCrictl(t, "inspect", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &ci); err != nil {
		t.Fatalf("crictl inspect: %v\n%s", err, out)
	}
	return ci
}

// RemovePod stops and removes a pod with its containers (`crictl stopp`,
// `crictl rmp`), as the kubelet does.
func (c *CRI) RemovePod(t T, id string) {
	t.Helper()
	c.MustCrictl(t, "stopp", id)
	c.MustCrictl(t, "rmp", id)
}
