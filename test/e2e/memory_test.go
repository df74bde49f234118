package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// memoryEvent is one event of the memory matrix and what must come of it.
type memoryEvent struct {
	name    string
	typ     string // CloudEvents type
	data    string
	status  int
	message string // in the response body
}

// TestMemoryMatrix: under a container memory limit (ctr run
// --memory-limit, as a user types it) and a concurrency, guests that
// exhaust their linear memory, their table, the Go allocator or stdout —
// several at once — fail their own event with the documented status, the
// kernel kills nothing (the container cgroup's OOM-kill counter stays 0),
// and the next event succeeds. A limit that cannot hold the Go guest's
// host is refused at Create.
func TestMemoryMatrix(t *testing.T) {
	d := startWithProbe(t)
	memhog := []memoryEvent{
		{"memory.grow loop", "mem.test", "m", 500, "memory limit of"},
		{"table.grow loop", "mem.test", "t", 500, "guest trapped: unreachable"},
		{"stdout flood", "mem.test", "o", 500, "guest output over the limit"},
		{"ok", "mem.test", "x", 200, "ok\n"},
	}
	probe := []memoryEvent{
		{"Go allocator loop", "probe.membomb", "", 500, "memory limit of"},
		{"Go stdout flood", "probe.flood", "", 500, "guest output over the limit"},
		{"ok", "probe.hello", "", 200, "hello from probe\n"},
	}
	for _, limit := range []int{32 << 20, 64 << 20, 256 << 20} {
		for _, conc := range []int{1, 2, 0} { // 0: the default
			cell := fmt.Sprintf("%dMiB/concurrency=%d", limit>>20, conc)
			if conc == 0 {
				cell = fmt.Sprintf("%dMiB/default", limit>>20)
			}
			t.Run(cell, func(t *testing.T) {
				extra := []string{"--memory-limit", strconv.Itoa(limit)}
				if conc > 0 {
					extra = append(extra, "--annotation", "nebula.dev/concurrency="+strconv.Itoa(conc))
				}
				at := conc
				if at == 0 {
					at = 2 // concurrent events even at the default
				}
				for _, fn := range []struct {
					image  string
					events []memoryEvent
				}{{harness.MemhogFnWasmImage, memhog}, {harness.ProbeFnWasmImage, probe}} {
					id := fmt.Sprintf("mem-%d-%d-%s", limit>>20, conc, strings.Split(filepath.Base(fn.image), ":")[0])
					if fn.image == harness.ProbeFnWasmImage && limit <= 64<<20 {
						// Compiling the 3 MB Go guest needs ~80 MiB of the
						// task's memory (and its host alone ~52 MiB): refused.
						args := append([]string{"run", "-d", "--runtime", "io.containerd.nebula.v1"}, extra...)
						r := d.Ctr(t, append(args, fn.image, id)...)
						if r.ExitCode == 0 || !strings.Contains(r.Stderr, "memory: the container limit does not exceed the host reserve") &&
							!strings.Contains(r.Stderr, "memory: compiling the module needs about") {
							t.Errorf("%s in %d MiB: exit %d, %q; want a refusal at Create", fn.image, limit>>20, r.ExitCode, r.Stderr)
						}
						d.Ctr(t, "container", "rm", id)
						continue
					}
					f := startFunction(t, d, fn.image, id, extra...)
					for _, ev := range fn.events {
						for i, r := range sendAtOnce(f, ev, at) {
							if r.status != ev.status || !strings.Contains(string(r.body), ev.message) {
								t.Errorf("%s, %s (%d of %d at once): %d %.200q; want %d and %q\n%s",
									fn.image, ev.name, i+1, at, r.status, r.body, ev.status, ev.message, d.LogTail(20))
							}
						}
					}
					if n := oomKills(t, d, id); n != 0 {
						t.Errorf("%s: the kernel OOM-killed %d processes of the container", id, n)
					}
					stopTask(t, d, id)
				}
			})
		}
	}
}

// sendAtOnce sends n copies of ev at the same time.
func sendAtOnce(f function, ev memoryEvent, n int) []reply {
	out := make([]reply, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = postEventNoFatal(f.URL, fmt.Sprintf("%s-%d", ev.typ, i), ev.typ, "", ev.data)
		}()
	}
	wg.Wait()
	return out
}

// TestMemoryRefusedAtCreate: a memory limit that cannot hold the host and
// the instances fails `ctr run` at Create with the numbers, and leaves
// nothing behind.
func TestMemoryRefusedAtCreate(t *testing.T) {
	d := startWithProbe(t)
	for _, tc := range []struct {
		name  string
		args  []string
		image string
		want  []string
	}{
		{"concurrency too high for one page", []string{"--memory-limit", "33554432", "--annotation", "nebula.dev/concurrency=10000"},
			harness.MemhogFnWasmImage, []string{"memory:", "container limit 33554432 bytes", "concurrency 10000", "host reserve", "module minimum memory 131072 bytes"}},
		{"Go guest below its minimum", []string{"--memory-limit", "83886080", "--annotation", "nebula.dev/concurrency=10"},
			harness.ProbeFnWasmImage, []string{"less than the module's minimum memory", "concurrency 10", "compiled code", "module minimum memory 2621440 bytes"}},
		{"knob above the share", []string{"--memory-limit", "67108864", "--annotation", "nebula.dev/concurrency=2", "--annotation", "nebula.dev/memory-limit=64Mi"},
			harness.MemhogFnWasmImage, []string{"nebula.dev/memory-limit is above each instance's share"}},
		{"limit below the host reserve", []string{"--memory-limit", "8388608"},
			harness.HelloWasmImage, []string{"does not exceed the host reserve", "container limit 8388608 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "-d", "--runtime", "io.containerd.nebula.v1"}, tc.args...)
			r := d.Ctr(t, append(args, tc.image, "refused")...)
			if r.ExitCode == 0 {
				stopTask(t, d, "refused")
				t.Fatalf("ctr run succeeded: %s", r.Stdout)
			}
			t.Logf("ctr run: %s", r.Stderr)
			for _, w := range tc.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("ctr run's error lacks %q:\n%s", w, r.Stderr)
				}
			}
			d.Ctr(t, "container", "rm", "refused")
			if cg := harness.CgroupsUnder(d.Namespace); len(cg) != 0 {
				t.Errorf("cgroups left: %v", cg)
			}
		})
	}
}

// TestMemoryRunMode16MiB: in a 16 MiB container a WAT hello runs, as the
// native probe does under runc.v2; the Go probe's wasm build cannot fit
// (the host needs about 33 MiB to load its 11 MB of compiled code) and is
// refused at Create with the numbers, instead of being OOM-killed.
func TestMemoryRunMode16MiB(t *testing.T) {
	d := startWithProbe(t)
	for _, c := range []struct {
		runtime, image string
		args           []string
		want           string // stdout, or the error's start
	}{
		{"io.containerd.runc.v2", harness.ProbeImage, []string{"/probe", "hello"}, "hello from probe\n"},
		{"io.containerd.nebula.v1", harness.HelloWasmImage, nil, "hello from wasm\n"},
		{"io.containerd.nebula.v1", harness.ProbeWasmImage, []string{"/probe.wasm", "hello"}, "memory: the container limit does not exceed the host reserve"},
	} {
		args := append([]string{"run", "--rm", "--runtime", c.runtime, "--memory-limit", "16777216", c.image, "small"}, c.args...)
		r := d.Ctr(t, args...)
		if strings.HasPrefix(c.want, "memory:") {
			if r.ExitCode == 0 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("%s %s: exit %d, stderr %q; want a refusal containing %q", c.runtime, c.image, r.ExitCode, r.Stderr, c.want)
			}
			t.Logf("%s: %s", c.image, r.Stderr)
			d.Ctr(t, "container", "rm", "small")
			continue
		}
		if r.ExitCode != 0 || r.Stdout != c.want {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want %q", c.runtime, c.image, r.ExitCode, r.Stdout, r.Stderr, c.want)
		}
	}
}

// oomKills is how many processes the kernel's OOM killer killed in the
// container's memory cgroup: v1's memory.oom_control oom_kill, v2's
// memory.events oom_kill.
func oomKills(t *testing.T, d *harness.Daemon, id string) int {
	t.Helper()
	for _, p := range []struct{ file, key string }{
		{filepath.Join("/sys/fs/cgroup/memory", d.Namespace, id, "memory.oom_control"), "oom_kill"},
		{filepath.Join("/sys/fs/cgroup", d.Namespace, id, "memory.events"), "oom_kill"},
	} {
		b, err := os.ReadFile(p.file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok && k == p.key {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("%s: %q", p.file, line)
				}
				return n
			}
		}
		t.Fatalf("%s has no %s line:\n%s", p.file, p.key, b)
	}
	t.Fatalf("no memory cgroup found for container %s in namespace %s", id, d.Namespace)
	return 0
}

// stopTask kills a task (SIGKILL) and removes it and its container.
func stopTask(t *testing.T, d *harness.Daemon, id string) {
	t.Helper()
	if r := d.Ctr(t, "task", "rm", "-f", id); r.ExitCode != 0 {
		t.Fatalf("ctr task rm -f %s: %s", id, r.Stderr)
	}
	d.MustCtr(t, "container", "rm", id)
}

// TestMemoryBodies: request bodies live on the host's heap, outside the
// guests' memory, so the memory plan gives them a share of the container's
// limit (an eighth, at least one max-body). Forty clients that each send
// 9 MiB of a 10 MiB body and stall would hold 360 MiB in a 64 MiB task:
// past the share they get 503 with Retry-After instead, the kernel kills
// nothing, and a well-behaved event still gets 200.
func TestMemoryBodies(t *testing.T) {
	d := startWithProbe(t)
	const id = "mem-bodies"
	f := startFunction(t, d, harness.MemhogFnWasmImage, id, "--memory-limit", strconv.Itoa(64<<20),
		"--annotation", "nebula.dev/concurrency=2")
	addr := strings.TrimSuffix(strings.TrimPrefix(f.URL, "http://"), "/")
	chunk := bytes.Repeat([]byte("x"), 9<<20)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(90 * time.Second))
			fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: %s\r\nCe-Specversion: 1.0\r\nCe-Id: big-%d\r\nCe-Source: /e2e\r\nCe-Type: mem.test\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", addr, i, 10<<20)
			_, _ = conn.Write(chunk) // a refused body may be cut short: the status still comes
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Errorf("client %d: no status: %v", i, err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[http.StatusServiceUnavailable] == 0 {
		t.Errorf("statuses %v: want 503 for the bodies past the task's share", statuses)
	}
	for code := range statuses {
		if code != http.StatusServiceUnavailable && code != http.StatusRequestTimeout {
			t.Errorf("statuses %v: want only 503 (over the share) and 408 (stalled)", statuses)
		}
	}
	if n := oomKills(t, d, id); n != 0 {
		t.Errorf("the kernel OOM-killed %d processes of the container", n)
	}
	if r := postEventNoFatal(f.URL, "after", "mem.test", "", "x"); r.status != 200 {
		t.Errorf("after the flood: %d %q, want 200\n%s", r.status, r.body, d.LogTail(20))
	}
	stopTask(t, d, id)
}
