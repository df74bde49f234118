// Command pause is the sandbox ("pause") container of Nebula's CRI tests:
// CRI starts it first in every pod to hold the pod's namespaces. No
// registry is reachable, so the tests build it with `nebula build` as the
// image localhost/nebula/pause:v1 instead of pulling Kubernetes' pause.
//
// Like Kubernetes' pause it does nothing: it sleeps until SIGTERM or
// SIGINT and then exits 0, and reaps every child that is reparented to it
// (as PID 1 of a pod sharing its PID namespace, orphans land here). It is
// built static (CGO_ENABLED=0): the image holds nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		reap()
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
	}
}

// reap waits for every exited child without blocking. Signals coalesce, so
// one SIGCHLD may stand for several children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
