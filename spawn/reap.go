package spawn

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Children of this process that Invoke started: ReapOrphans must not
// take their exit statuses. startMu is held shared while a child is
// started and recorded, exclusively while ReapOrphans decides about one,
// so that a child that exits at once is never taken for an orphan.
var (
	startMu sync.RWMutex
	owned   sync.Map // pid -> struct{}
	rescan  = make(chan struct{}, 1)
)

func startOwned(path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	startMu.RLock()
	defer startMu.RUnlock()
	p, err := os.StartProcess(path, argv, attr)
	if err == nil {
		owned.Store(p.Pid, struct{}{})
	}
	return p, err
}

// release forgets pid once Invoke has reaped it. A new child with the
// same pid that exited in between was skipped: have it looked at again.
func release(pid int) {
	owned.Delete(pid)
	select {
	case rescan <- struct{}{}:
	default:
	}
}

// ReapOrphans reaps, until stop is called, every child of this process that
// Invoke did not start, as it exits. A program that is its container's init
// (PID 1) inherits the orphans of processes it did not start — those of
// `ctr task exec` sessions, for instance — and must reap them, or they stay
// zombies; it must not take the exit statuses of its own invocations'
// supervisors, as a wait for any child would. ReapOrphans never signals a
// process, and waits only for specific pids.
//
// # Notes
//
// It looks for exited children on every SIGCHLD, so each one costs a read
// of the children of this process's threads (/proc/self/task/*/children).
func ReapOrphans() (stop func()) {
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			reapUnowned()
			select {
			case <-chld:
			case <-rescan:
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(chld)
		close(done)
		<-finished
	}
}

// reapUnowned reaps the children of this process that have exited and are
// not Invoke's.
func reapUnowned() {
	for _, c := range children(os.Getpid()) {
		if _, ok := owned.Load(c); ok {
			continue
		}
		reapIfUnowned(c)
	}
}

func reapIfUnowned(pid int) {
	startMu.Lock()
	defer startMu.Unlock()
	if _, ok := owned.Load(pid); ok {
		return // started just now
	}
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG, nil) == unix.EINTR {
	}
}
