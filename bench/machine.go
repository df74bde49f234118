package bench

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
)

// Machine describes where a study ran, for machine.json: what a reader
// needs to compare figures from two machines.
type Machine struct {
	Started     string `json:"started"`
	Finished    string `json:"finished"`
	Hostname    string `json:"hostname"`
	CPUModel    string `json:"cpu_model"`
	Cores       int    `json:"cores"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Cgroup      string `json:"cgroup"`
	LoadAverage string `json:"load_average_at_start"`
	Containerd  struct {
		Version   string `json:"version"`
		Revision  string `json:"revision"`
		Address   string `json:"address"`
		Namespace string `json:"namespace"`
	} `json:"containerd"`
	Runc string `json:"runc"`
	// Wazero is the wazero version the shim was built with, from its build
	// info (Shim names the binary read), else this binary's.
	Wazero string `json:"wazero"`
	Shim   string `json:"shim"`
	Go     string `json:"go"`
	Nebula string `json:"nebula"`
	Study  struct {
		N         int      `json:"n"`
		Warmup    int      `json:"warmup"`
		Events    int      `json:"events_per_iteration"`
		Primers   int      `json:"primers"`
		Functions []string `json:"functions"`
		Cells     []string `json:"cells"`
		Seed      uint64   `json:"bootstrap_seed"`
		Resamples int      `json:"bootstrap_resamples"`
	} `json:"study"`
}

func collectMachine(ctx context.Context, v containerd.Version, cfg Config) Machine {
	var m Machine
	m.Started = time.Now().UTC().Format(time.RFC3339)
	m.Hostname, _ = os.Hostname()
	m.CPUModel = cpuModel()
	m.Cores = runtime.NumCPU()
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryBytes = uint64(si.Totalram) * uint64(si.Unit)
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.OS = osRelease()
	m.Arch = runtime.GOARCH
	m.Cgroup = cgroupVersion()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	m.Containerd.Version, m.Containerd.Revision = v.Version, v.Revision
	m.Containerd.Address, m.Containerd.Namespace = cfg.address, cfg.namespace
	m.Runc = runcVersion(ctx)
	m.Go = runtime.Version()
	m.Wazero, m.Shim, m.Nebula = buildVersions()
	m.Study.N, m.Study.Warmup, m.Study.Events, m.Study.Primers = cfg.n, cfg.warmup, cfg.events, cfg.primers
	m.Study.Functions, m.Study.Cells = cfg.functions, cfg.cells
	m.Study.Seed, m.Study.Resamples = cfg.seed, cfg.resamples
	return m
}

// WriteJSON writes m as indented JSON.
func (m Machine) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

// cgroupVersion tells v2 (unified), v1 with a v2 hierarchy beside it
// (hybrid) and v1.
func cgroupVersion() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) != nil {
		return "unknown"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2 (unified)"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v1 (hybrid)"
	}
	return "v1"
}

// runcVersion is `runc --version` of the runc on PATH (what containerd's
// shims run unless configured otherwise), on one line.
func runcVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	path, err := exec.LookPath("runc")
	if err != nil {
		return "not found on PATH"
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return path + ": " + err.Error()
	}
	lines := strings.Split(string(bytes.TrimSpace(out)), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ") + " (" + path + ")"
}

// shimBinary is the file name of Nebula's shim.
const shimBinary = "containerd-shim-nebula-v1"

// buildVersions returns the wazero version of the shim, found on PATH or
// next to this executable (make install and make build put them side by
// side), read from its build info, and the Nebula version of this binary.
func buildVersions() (wazero, shim, nebula string) {
	wazero, shim, nebula = "unknown", "not found", "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		nebula = bi.Main.Version
	}
	var candidates []string
	if p, err := exec.LookPath(shimBinary); err == nil {
		candidates = append(candidates, p)
	}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), shimBinary))
	}
	for _, p := range candidates {
		bi, err := buildinfo.ReadFile(p)
		if err != nil {
			continue
		}
		if v := depVersion(bi, "github.com/tetratelabs/wazero"); v != "" {
			return v, p + " (" + bi.GoVersion + ")", nebula
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := depVersion(bi, "github.com/tetratelabs/wazero"); v != "" {
			wazero = v + " (this binary's; the shim was not found)"
		}
	}
	return wazero, shim, nebula
}

func depVersion(bi *debug.BuildInfo, path string) string {
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}
