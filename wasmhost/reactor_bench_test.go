package wasmhost

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// BenchmarkEvent compares, in one run, an event served by a command module
// (a fresh instance running `_start`, Invoker) with the same work served
// by a reactor (a fresh instance restored from the snapshot,
// ReactorInvoker): the tiny echo (echo.wat, reactor.wat) and a Go JSON
// echo (the probe's echo, testdata/goreactor). Besides ns/op it reports
// the medians of Response.Startup and of Startup+Execution, and the minor
// page faults per event.
//
//	go test -run '^$' -bench BenchmarkEvent -benchtime 2000x -cpu 1,2 ./wasmhost/
func BenchmarkEvent(b *testing.B) {
	ctx := context.Background()
	req := &abi.Request{Stdin: []byte(`{"hello":"world"}`), Env: []string{"CE_ID=1", "CE_TYPE=t", "CE_SOURCE=/bench"}}
	cases := []struct {
		name    string
		file    string
		reactor bool
		args    []string
	}{
		{"tiny/command", functions.Echo, false, nil},
		{"tiny/reactor", functions.Reactor, true, nil},
		{"go/command", functions.Probe, false, []string{"echo"}},
		{"go/reactor", goReactor, true, nil},
		{"go/probe-reactor", functions.ProbeReactor, true, nil},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if c.file == goReactor {
				needGoReactor(b)
			}
			mod := compile(b, Config{}, c.file)
			rc := RunConfig{Args: append([]string{c.file}, c.args...)}
			var inv abi.Invoker = NewInvoker(mod, rc)
			if c.reactor {
				r, err := NewReactorInvoker(ctx, mod, rc)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(r.SnapshotTime.Nanoseconds()), "snapshot-ns")
				inv = r
			}
			req := req
			if c.file == functions.ProbeReactor { // the event's type names the command
				req = &abi.Request{Stdin: req.Stdin, Env: []string{"CE_ID=1", "CE_TYPE=probe.echo", "CE_SOURCE=/bench"}}
			}
			if resp, err := inv.Invoke(ctx, req); err != nil || len(resp.Stdout) == 0 { // the slot's first use
				b.Fatal(err)
			}
			var startups, totals []time.Duration
			faults, cpu := minorFaults(), cpuTime()
			b.ReportAllocs()
			b.ResetTimer() // not the compile and the snapshot
			b.RunParallel(func(pb *testing.PB) {
				var s, t []time.Duration
				for pb.Next() {
					resp, err := inv.Invoke(ctx, req)
					if err != nil {
						b.Error(err)
						return
					}
					s = append(s, resp.Startup)
					t = append(t, resp.Startup+resp.Execution)
				}
				benchMu.Lock()
				startups, totals = append(startups, s...), append(totals, t...)
				benchMu.Unlock()
			})
			b.ReportMetric(float64(minorFaults()-faults)/float64(b.N), "minflt/op")
			b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(median(startups).Nanoseconds()), "startup-p50-ns")
			b.ReportMetric(float64(median(totals).Nanoseconds()), "total-p50-ns")
		})
	}
}

var benchMu sync.Mutex

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// minorFaults is the process's minor page faults so far.
func minorFaults() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// cpuTime is the CPU time (user and system) the process has used so far:
// per event, it does not count the time the machine's other load takes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSnapshot is NewReactorInvoker: instantiate, apply the data,
// `_initialize`, capture the snapshot.
func BenchmarkSnapshot(b *testing.B) {
	ctx := context.Background()
	for _, file := range []string{functions.Reactor, goReactor} {
		b.Run(file, func(b *testing.B) {
			if file == goReactor {
				needGoReactor(b)
			}
			mod := compile(b, Config{}, file)
			for b.Loop() {
				if _, err := NewReactorInvoker(ctx, mod, RunConfig{Args: []string{file}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
