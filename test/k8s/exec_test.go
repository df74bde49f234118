//go:build k8s

package k8s

import (
	"os/exec"
	"strings"
	"testing"

	"nebula.dev/nebula/test/harness"
)

// testExec: kubectl exec of a WebAssembly module into the function's wasm
// container (API server → kubelet → CRI → the shim's Exec) runs it under
// Nebula's host program, next to the function, with its stdout, stdin,
// stderr, exit code and a tty; a missing module gets the host program's
// answer; the function keeps serving.
func testExec(t *testing.T, k *harness.Cluster, pod string) {
	exe := func(args ...string) harness.Result {
		r := k.Kubectl(t, append([]string{"exec", pod, "-c", "user-container", "--"}, args...)...)
		t.Logf("$ kubectl exec %s -c user-container -- %s\n%s%s(exit %d)", pod, strings.Join(args, " "), r.Stdout, r.Stderr, r.ExitCode)
		return r
	}
	if r := exe("/probe.wasm", "hello"); r.ExitCode != 0 || r.Stdout != "hello from probe\n" {
		t.Errorf("kubectl exec /probe.wasm hello: exit %d stdout %q stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	if r := exe("/probe.wasm", "args", "x y"); r.Stdout != "/probe.wasm\nargs\nx y\n" {
		t.Errorf("kubectl exec /probe.wasm args: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	// The exit code reaches kubectl ("command terminated with exit code 3").
	if r := exe("/probe.wasm", "exit", "3"); r.ExitCode != 3 {
		t.Errorf("kubectl exec /probe.wasm exit 3: exit %d stderr %q", r.ExitCode, r.Stderr)
	}
	if r := exe("/probe.wasm", "cat", "/nope"); r.ExitCode == 0 || !strings.Contains(r.Stderr, "/nope") {
		t.Errorf("kubectl exec /probe.wasm cat /nope: exit %d stderr %q, want the guest's error", r.ExitCode, r.Stderr)
	}
	if r := exe("/missing.wasm"); r.ExitCode != 127 || !strings.Contains(r.Stderr, "/missing.wasm: no such file") {
		t.Errorf("kubectl exec /missing.wasm: exit %d stderr %q, want 127 and the host program's error", r.ExitCode, r.Stderr)
	}
	// stdin (kubectl exec -i).
	r := k.KubectlStdin(t, "piped through kubectl\n", "exec", "-i", pod, "-c", "user-container", "--", "/probe.wasm", "echo")
	if r.ExitCode != 0 || r.Stdout != "piped through kubectl\n" {
		t.Errorf("kubectl exec -i /probe.wasm echo: exit %d stdout %q stderr %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	// A tty (kubectl exec -it: kubectl asks for one only with stdin),
	// under script(1) for a pty of its own whose \n → \r\n translation is
	// off: the container's tty's line discipline adds the \r.
	viaPty := func(flags string) string {
		cmd := exec.Command("script", "-qec", "stty -onlcr; kubectl exec "+flags+pod+" -c user-container -- /probe.wasm hello", "/dev/null")
		cmd.Env = append(cmd.Environ(), "KUBECONFIG="+k.Kubeconfig, "PATH="+harness.KubernetesBinDir()+":/usr/bin:/bin")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "hello from probe") {
			t.Errorf("kubectl exec %s under script: %v, output %q", flags, err, out)
		}
		return string(out)
	}
	withTTY, without := viaPty("-it "), viaPty("-i ")
	t.Logf("kubectl exec -it: %q; with -i only: %q", withTTY, without)
	if !strings.Contains(withTTY, "hello from probe\r\n") || !strings.Contains(without, "hello from probe\n") || strings.Contains(without, "probe\r") {
		t.Errorf("kubectl exec -it: output %q, with -i only %q: want \\r\\n from the container's tty, \\n without", withTTY, without)
	}
	// The function still serves, its container never restarted.
	if r := exe("/probe.wasm", "hello"); r.ExitCode != 0 {
		t.Errorf("exec after the others: exit %d", r.ExitCode)
	}
	if restarts := k.MustKubectl(t, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); restarts != "0" {
		t.Errorf("pod %s restarted %s times", pod, restarts)
	}
}
