//go:build k8s

package k8s

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// nodeConfig is the containerd config of the test's own "node" that the
// installer edits: it is not the config of the containerd the cluster runs
// on, which the test must not change under the kubelet.
const nodeConfig = `version = 3
root = "/var/lib/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"
`

// testInstaller: deploy/kubernetes/installer.yaml, its image built by
// deploy/installer/build.sh and imported into the node's containerd (no
// registry), runs as a DaemonSet pod on the node with its host paths
// pointed at a directory of the test's own (a fake /usr/local/bin,
// /etc/containerd and /run/systemd) and --restart=none (no systemd unit
// manages that containerd config). It installs the binaries and the
// drop-in, makes the config import conf.d/*.toml (which containerd then
// accepts, with Nebula's runtime); a restarted pod changes nothing; the
// README's uninstall (the DaemonSet's first argument set to uninstall)
// removes everything it added and leaves the config as it was, twice.
func testInstaller(t *testing.T, k *harness.Cluster) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "installer.tar")
	build := exec.Command("deploy/installer/build.sh", archive)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/installer/build.sh: %v\n%s", err, out)
	}
	k.ImportImage(t, archive)

	host := t.TempDir()
	bin, etc := filepath.Join(host, "usr/local/bin"), filepath.Join(host, "etc/containerd")
	for _, d := range []string{bin, etc, filepath.Join(host, "run/systemd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	config := filepath.Join(etc, "config.toml")
	if err := os.WriteFile(config, []byte(nodeConfig), 0o644); err != nil {
		t.Fatal(err)
	}

	manifest := readRepoFile(t, "deploy/kubernetes/installer.yaml")
	for old, new := range map[string]string{
		"path: /usr/local/bin\n":  "path: " + bin + "\n",
		"path: /etc/containerd\n": "path: " + etc + "\n",
		"path: /run/systemd\n":    "path: " + filepath.Join(host, "run/systemd") + "\n",
		"- --restart=systemd\n":   "- --restart=none\n",
	} {
		if n := strings.Count(manifest, old); n != 1 {
			t.Fatalf("deploy/kubernetes/installer.yaml has %q %d times, want once", old, n)
		}
		manifest = strings.Replace(manifest, old, new, 1)
	}
	kubectlStdin(t, k, manifest, "apply", "-f", "-")
	defer func() {
		kubectlStdin(t, k, manifest, "delete", "-f", "-", "--timeout=100s")
	}()
	kubectl(t, k, "-n", "nebula-system", "rollout", "status", "daemonset/nebula-installer", "--timeout=150s")
	pod := installerPod(t, k, "")
	logs := kubectl(t, k, "-n", "nebula-system", "logs", pod)
	for _, want := range []string{
		bin + "/containerd-shim-nebula-v1: written", bin + "/nebula-host: written",
		etc + "/conf.d/nebula.toml: written", etc + "/config.toml: written",
		"containerd's configuration changed: restart containerd to apply it", "nebula-installer install: done",
	} {
		// The installer names the node's paths as it sees them, under /host.
		if want = strings.Replace(want, host, "/host", 1); !strings.Contains(logs, want) {
			t.Errorf("the installer's log lacks %q:\n%s", want, logs)
		}
	}

	// What it wrote.
	for _, name := range []string{"containerd-shim-nebula-v1", "nebula-host"} {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil || fi.Mode().Perm() != 0o755 || fi.Size() < 1<<20 {
			t.Errorf("%s/%s: %v %v, want an executable (0755) binary", bin, name, fi, err)
		}
	}
	if got, want := readFile(t, filepath.Join(etc, "conf.d/nebula.toml")), readRepoFile(t, "deploy/containerd/nebula.toml"); got != want {
		t.Errorf("conf.d/nebula.toml is not deploy/containerd/nebula.toml:\n%s", got)
	}
	const marker = "# added by nebula-installer (removed by `nebula-installer uninstall`)"
	wantConfig := "version = 3\n" + marker + "\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n" + strings.TrimPrefix(nodeConfig, "version = 3\n")
	installed := readFile(t, config)
	if installed != wantConfig {
		t.Errorf("config.toml after install:\n%s\nwant:\n%s", installed, wantConfig)
	}
	// containerd accepts the result, and it registers Nebula's runtime
	// (its import pointed at the test's conf.d).
	check := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(check, []byte(strings.Replace(installed, "/etc/containerd/conf.d", filepath.Join(etc, "conf.d"), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	containerd := harness.Tool(t, harness.ContainerdVersion(), "containerd")
	dump, err := exec.Command(containerd, "--config", check, "config", "dump").CombinedOutput()
	if err != nil || !strings.Contains(string(dump), `runtime_type = 'io.containerd.nebula.v1'`) && !strings.Contains(string(dump), `runtime_type = "io.containerd.nebula.v1"`) {
		t.Errorf("containerd config dump of the installed config: %v\n%s", err, dump)
	}
	before := stats(t, bin, etc)

	// A restarted pod (the DaemonSet's next run) changes nothing.
	kubectl(t, k, "-n", "nebula-system", "delete", "pod", pod)
	pod = installerPod(t, k, pod)
	kubectl(t, k, "-n", "nebula-system", "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=100s")
	logs = kubectl(t, k, "-n", "nebula-system", "logs", pod)
	if strings.Contains(logs, "written") || !strings.Contains(logs, "not restarting it") || !strings.Contains(logs, "nebula-installer install: done") {
		t.Errorf("the restarted installer's log:\n%s\nwant every file up to date and no restart", logs)
	}
	if after := stats(t, bin, etc); after != before {
		t.Errorf("the restarted installer touched files:\nbefore %s\nafter  %s", before, after)
	}

	// Uninstall as the README says: the first argument becomes uninstall.
	for run := 1; run <= 2; run++ {
		if run == 1 {
			kubectl(t, k, "-n", "nebula-system", "patch", "daemonset/nebula-installer", "--type=json",
				`--patch=[{"op":"replace","path":"/spec/template/spec/containers/0/args/0","value":"uninstall"}]`)
		} else {
			kubectl(t, k, "-n", "nebula-system", "delete", "pod", pod)
		}
		pod = installerPod(t, k, pod)
		k.WaitFor(t, "the installer to uninstall", 2*time.Minute, func() (bool, string) {
			logs = k.Kubectl(t, "-n", "nebula-system", "logs", pod).Stdout
			return strings.Contains(logs, "nebula-installer uninstall: done"), logs
		})
		t.Logf("$ kubectl -n nebula-system logs %s # uninstall, run %d\n%s", pod, run, logs)
		if run == 2 && strings.Contains(logs, "removed") {
			t.Errorf("the second uninstall removed something:\n%s", logs)
		}
		for _, p := range []string{filepath.Join(bin, "containerd-shim-nebula-v1"), filepath.Join(bin, "nebula-host"), filepath.Join(etc, "conf.d/nebula.toml")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("uninstall (run %d) left %s", run, p)
			}
		}
		if got := readFile(t, config); got != nodeConfig {
			t.Errorf("config.toml after uninstall (run %d):\n%s\nwant it as it was:\n%s", run, got, nodeConfig)
		}
		// Its readiness probe (nebula-installer check) now fails: the
		// node no longer has Nebula.
		k.WaitFor(t, "the uninstalled pod's readiness probe to fail", 2*time.Minute, func() (bool, string) {
			r := k.Kubectl(t, "-n", "nebula-system", "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return r.Stdout == "False", r.Stdout
		})
	}
}

// installerPod returns the name of the installer's pod once it is not old
// (a pod being replaced).
func installerPod(t *testing.T, k *harness.Cluster, old string) string {
	t.Helper()
	var pod string
	k.WaitFor(t, "the installer's pod", 2*time.Minute, func() (bool, string) {
		names := strings.Fields(k.MustKubectl(t, "-n", "nebula-system", "get", "pods", "-l", "app.kubernetes.io/name=nebula-installer",
			"--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"))
		for _, n := range names {
			if n != old {
				pod = n
				return true, ""
			}
		}
		return false, strings.Join(names, " ")
	})
	return pod
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stats renders the inode, size and modification time of every file
// under dirs.
func stats(t *testing.T, dirs ...string) string {
	t.Helper()
	var out []string
	for _, dir := range dirs {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			out = append(out, p+" "+fi.Mode().String()+" "+fi.ModTime().String()+" "+
				itoa(st.Ino)+" "+itoa(uint64(fi.Size())))
			return nil
		})
	}
	return strings.Join(out, "\n")
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
