package spawn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/spawn"
)

var markSeq atomic.Int64

// scripts returns an Invoker that runs the shell script in each request's
// $SCRIPT: one Invoker, so that its supervisors serve one hostile
// invocation after another.
func scripts(t *testing.T, cfg spawn.Config) *spawn.Invoker {
	return newInvoker(t, "/bin/sh", []string{"-c", `eval "$SCRIPT"`}, []string{"PATH=/usr/bin:/bin"}, cfg)
}

// marked runs script in an invocation whose environment carries a marker
// unique to it, which every process it starts inherits.
func marked(ctx context.Context, inv *spawn.Invoker, script string) (mark string, resp *abi.Response, err error) {
	mark = fmt.Sprintf("%d-%d", os.Getpid(), markSeq.Add(1))
	resp, err = inv.Invoke(ctx, &abi.Request{Env: []string{"SCRIPT=" + script, "NEBULA_TEST_MARK=" + mark}})
	return mark, resp, err
}

// withMark returns the live processes whose environment carries mark (a
// zombie has no environment left to read).
func withMark(mark string) []int {
	want := []byte("\x00NEBULA_TEST_MARK=" + mark + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(append([]byte{0}, env...), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// zombieChildren returns the children of the test process (a subreaper,
// see TestMain) that are zombies.
func zombieChildren() []string {
	var zs []string
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			stat, err := os.ReadFile("/proc/" + f + "/stat")
			if err != nil {
				continue
			}
			rest := stat[bytes.LastIndexByte(stat, ')')+1:]
			if fields := strings.Fields(string(rest)); len(fields) > 0 && fields[0] == "Z" {
				zs = append(zs, string(stat[:bytes.LastIndexByte(stat, ')')+1]))
			}
		}
	}
	return zs
}

// assertContained fails if anything of the invocation marked mark is still
// running, or left a zombie, once Invoke has returned: no waiting.
func assertContained(t *testing.T, mark string) {
	t.Helper()
	if pids := withMark(mark); len(pids) > 0 {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Errorf("processes %v outlived their invocation", pids)
	}
	if zs := zombieChildren(); len(zs) > 0 {
		t.Errorf("%d zombies left: %v", len(zs), zs[:min(len(zs), 5)])
	}
}

// TestNothingOutlivesItsInvocation runs functions that leave processes
// behind in every way a shell can, each with an exit status to report
// exactly.
func TestNothingOutlivesItsInvocation(t *testing.T) {
	inv := scripts(t, config())
	for _, tc := range []struct {
		name, script string
		check        func(error) bool
	}{
		{"background", `sleep 1000 & echo started`, ok},
		{"setsid", `setsid sleep 1000 & echo started`, ok},
		{"double fork", `(setsid sh -c 'sleep 1000 & sleep 1000' &); echo started`, ok},
		{"ignores TERM and HUP", `sh -c 'trap "" TERM HUP INT; setsid sleep 1000 & sleep 1000' & echo started`, ok},
		{"stopped", `sh -c 'kill -STOP $$' & sleep 0.1; echo started`, ok},
		{"forks without end", `setsid sh -c 'while :; do (setsid sleep 1000 &); done' & sleep 0.2; echo started`, ok},
		{"many children", `for i in 1 2 3 4 5 6 7 8 9 10; do setsid sleep 1000 & sleep 1000 & done; echo started`, ok},
		{"exit 7", `setsid sleep 1000 & echo started; exit 7`, exitCode(7)},
		{"exit 255", `setsid sleep 1000 & echo started; exit 255`, exitCode(255)},
		{"killed by SIGSEGV", `setsid sleep 1000 & echo started; kill -SEGV $$`, signalled("segmentation fault")},
		{"killed by SIGKILL", `setsid sleep 1000 & echo started; kill -KILL $$`, signalled("killed")},
		{"child kills the entrypoint", `setsid sh -c "kill -TERM $$" & echo started; sleep 1000`, signalled("terminated")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			mark, resp, err := marked(ctx, inv, tc.script)
			if !tc.check(err) {
				t.Errorf("err = %v", err)
			}
			if string(resp.Stdout) != "started\n" {
				t.Errorf("stdout %q", resp.Stdout)
			}
			assertContained(t, mark)
		})
	}
}

func ok(err error) bool { return err == nil }

// warm runs one invocation, so that inv has a supervisor ready and a
// timeout runs against the function alone.
func warm(t *testing.T, inv *spawn.Invoker) {
	t.Helper()
	if _, _, err := marked(context.Background(), inv, `true`); err != nil {
		t.Fatal(err)
	}
}

func exitCode(code int) func(error) bool {
	return func(err error) bool {
		var exit *abi.ExitError
		return errors.As(err, &exit) && exit.Code == code
	}
}

func signalled(name string) func(error) bool {
	return func(err error) bool {
		return errors.Is(err, abi.ErrTrap) && err.Error() == abi.ErrTrap.Error()+": killed by signal "+name
	}
}

// TestKilledInvocationContained: a timeout or the output cap kills the
// whole tree, setsid or not.
func TestKilledInvocationContained(t *testing.T) {
	inv := scripts(t, config().WithMaxOutput(1000))
	warm(t, inv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	mark, _, err := marked(ctx, inv, `setsid sleep 1000 & (setsid sh -c 'sleep 1000 &' &); sleep 1000`)
	if !errors.Is(err, abi.ErrTimeout) {
		t.Errorf("timeout: err = %v", err)
	}
	assertContained(t, mark)

	mark, _, err = marked(context.Background(), inv, `setsid sleep 1000 & while :; do echo 0123456789; done`)
	if !errors.Is(err, abi.ErrOutputLimit) {
		t.Errorf("output cap: err = %v", err)
	}
	assertContained(t, mark)
}

// TestSupervisorStopped: a function that stops its supervisor (SIGSTOP)
// is still killed, with all it started, at its timeout.
func TestSupervisorStopped(t *testing.T) {
	inv := scripts(t, config())
	warm(t, inv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	mark, _, err := marked(ctx, inv, `setsid sleep 1000 & kill -STOP $PPID; sleep 1000`)
	if !errors.Is(err, abi.ErrTimeout) {
		t.Errorf("err = %v, want ErrTimeout", err)
	}
	assertContained(t, mark)
	if _, resp, err := marked(context.Background(), inv, `echo next`); err != nil || string(resp.Stdout) != "next\n" {
		t.Fatalf("next invocation: %q, %v", resp.Stdout, err)
	}
}

// TestSupervisorKilled: a function that kills its supervisor (SIGKILL, the
// one signal it cannot ignore) fails its invocation, and the next one gets
// a new supervisor. What it started is re-parented to the host, outside
// any invocation (docs/rationale.md): here, the test process, whose
// ReapOrphans reaps it.
func TestSupervisorKilled(t *testing.T) {
	stop := spawn.ReapOrphans()
	defer stop()
	inv := scripts(t, config())
	mark, _, err := marked(context.Background(), inv, `kill -KILL $PPID`)
	if err == nil || !strings.Contains(err.Error(), "supervisor exited mid-invocation: signal: killed") {
		t.Errorf("err = %v, want the supervisor's death", err)
	}
	if _, resp, err := marked(context.Background(), inv, `echo next`); err != nil || string(resp.Stdout) != "next\n" {
		t.Fatalf("next invocation: %q, %v", resp.Stdout, err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(withMark(mark)) > 0 || len(zombieChildren()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the function's shell was not reaped: %v, zombies %v", withMark(mark), zombieChildren())
		}
	}
}

// TestInvocationsIndependent: one invocation's clean-up never touches
// another's processes, however many end around it.
func TestInvocationsIndependent(t *testing.T) {
	// The long invocation's background child must live until it ends.
	long := `sleep 1000 & child=$!; sleep 2; kill -0 $child && echo alive`
	inv := scripts(t, config())
	var wg sync.WaitGroup
	var longOut []byte
	var longErr error
	var longMark string
	wg.Go(func() {
		var resp *abi.Response
		longMark, resp, longErr = marked(context.Background(), inv, long)
		longOut = resp.Stdout
	})
	for i := range 40 {
		wg.Go(func() {
			code := i % 4
			_, _, err := marked(context.Background(), inv, fmt.Sprintf(`setsid sleep 1000 & sleep 1000 & exit %d`, code))
			if code == 0 && err != nil || code != 0 && !exitCode(code)(err) {
				t.Errorf("invocation %d: err = %v, want exit %d", i, err, code)
			}
		})
	}
	wg.Wait()
	if longErr != nil || string(longOut) != "alive\n" {
		t.Fatalf("long invocation: %q, %v: its child was killed by another invocation", longOut, longErr)
	}
	assertContained(t, longMark)
}

// TestReapOrphans: processes the test starts itself, outside Invoke (as
// `ctr task exec` does in a container), leave orphans that ReapOrphans
// reaps once they exit and never kills; meanwhile Invoke's statuses stay
// exact.
func TestReapOrphans(t *testing.T) {
	dir := t.TempDir()
	const orphans = 5
	for i := range orphans {
		// The shell exits at once; its subshell is orphaned to the test
		// process, runs to its end, and must not be killed.
		script := fmt.Sprintf(`(sleep 1; echo done > %s/%d) >/dev/null 2>&1 &`, dir, i)
		if out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// Started after the shells above were waited for: ReapOrphans takes
	// every child that Invoke did not start.
	stop := spawn.ReapOrphans()
	defer stop()
	inv := scripts(t, config())
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			var want func(error) bool
			script := fmt.Sprintf(`setsid sleep 1000 & echo started; exit %d`, i%3)
			switch {
			case i%5 == 4:
				script, want = `setsid sleep 1000 & echo started; kill -SEGV $$`, signalled("segmentation fault")
			case i%3 == 0:
				want = ok
			default:
				want = exitCode(i % 3)
			}
			mark, resp, err := marked(context.Background(), inv, script)
			if !want(err) || string(resp.Stdout) != "started\n" {
				t.Errorf("invocation %d: %q, %v", i, resp.Stdout, err)
			}
			if pids := withMark(mark); len(pids) > 0 {
				t.Errorf("invocation %d: %v outlived it", i, pids)
			}
		})
	}
	t0 := time.Now()
	wg.Wait()
	t.Logf("invocations done after %v", time.Since(t0))
	deadline := time.Now().Add(30 * time.Second)
	for {
		done, _ := filepath.Glob(filepath.Join(dir, "*"))
		zs := zombieChildren()
		if len(done) == orphans && len(zs) == 0 {
			t.Logf("reaped after %v", time.Since(t0))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d of %d orphans finished; zombies %v", len(done), orphans, zs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
