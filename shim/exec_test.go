package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/runtime-spec/specs-go"

	"nebula.dev/nebula/oci"
)

// TestTrackExec: Exec knows the created tasks whose process is the host
// program, with the root filesystem runc's shim mounted (the bundle's
// rootfs) or the spec's root path; other tasks, and deleted ones, not.
func TestTrackExec(t *testing.T) {
	s := &service{execTargets: map[string]execTarget{}}
	bundle := func(args []string, root string) string {
		dir := t.TempDir()
		b, err := json.Marshal(&specs.Spec{Process: &specs.Process{Args: args}, Root: &specs.Root{Path: root}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	host := []string{oci.HostBinary, "--mode", "run", "--runtime", "wasm", "--", "/m.wasm"}

	image := bundle(host, "rootfs")
	s.trackExec(&taskAPI.CreateTaskRequest{ID: "image", Bundle: image, Rootfs: []*types.Mount{{Type: "overlay"}}})
	dir := bundle(host, "/srv/root")
	s.trackExec(&taskAPI.CreateTaskRequest{ID: "dir", Bundle: dir})
	rel := bundle(host, "r")
	s.trackExec(&taskAPI.CreateTaskRequest{ID: "rel", Bundle: rel})
	s.trackExec(&taskAPI.CreateTaskRequest{ID: "native", Bundle: bundle([]string{"/bin/server"}, "rootfs")})
	s.trackExec(&taskAPI.CreateTaskRequest{ID: "nobundle", Bundle: filepath.Join(t.TempDir(), "gone")})

	for id, want := range map[string]string{
		"image": filepath.Join(image, "rootfs"),
		"dir":   "/srv/root",
		"rel":   filepath.Join(rel, "r"),
	} {
		got, ok := s.execTargets[id]
		if !ok || got.rootfs != want || len(got.args) != len(host) {
			t.Errorf("task %s: %+v (tracked %v), want rootfs %s and the host args", id, got, ok, want)
		}
	}
	for _, id := range []string{"native", "nobundle"} {
		if _, ok := s.execTargets[id]; ok {
			t.Errorf("task %s tracked", id)
		}
	}
	s.forgetExec("image")
	if _, ok := s.execTargets["image"]; ok || len(s.execTargets) != 2 {
		t.Errorf("after forgetExec: %v", s.execTargets)
	}
}
