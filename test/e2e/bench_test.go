package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"nebula.dev/nebula/test/harness"
)

// BenchmarkCtrRun measures the wall time of `ctr run --rm` of a program
// that prints hello and exits: natively under runc.v2 and under Nebula, and
// as wasm (the tiny WAT module and the Go probe) under Nebula. Each b.N
// iteration runs every cell once, in rotating order, so machine drift hits
// all alike; medians and ratios to runc.v2 are reported as custom metrics:
//
//	go test -run '^$' -bench CtrRun -benchtime 20x ./test/e2e
func BenchmarkCtrRun(b *testing.B) {
	d := startWithProbe(b)
	cells := []struct {
		name, runtime, image string
		args                 []string
		want                 string
	}{
		{"runc-native", runcV2, probeImage, []string{"/probe", "hello"}, "hello from probe\n"},
		{"nebula-native", nebula, probeImage, []string{"/probe", "hello"}, "hello from probe\n"},
		{"nebula-wasm-wat", nebula, helloWasmImage, nil, "hello from wasm\n"},
		{"nebula-wasm-go", nebula, probeWasmImage, []string{"/probe.wasm", "hello"}, "hello from probe\n"},
	}
	times := make([][]time.Duration, len(cells))
	run := func(c int, id string) time.Duration {
		cell := cells[c]
		start := time.Now()
		r := d.Ctr(b, append([]string{"run", "--rm", "--runtime", cell.runtime, cell.image, id}, cell.args...)...)
		elapsed := time.Since(start)
		if r.ExitCode != 0 || r.Stdout != cell.want {
			b.Fatalf("%s: exit %d, stdout %q, stderr %q", cell.name, r.ExitCode, r.Stdout, r.Stderr)
		}
		return elapsed
	}
	// Warm-up: page cache, and the compile cache for the wasm modules.
	for c := range cells {
		run(c, fmt.Sprintf("warm-%d", c))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range cells {
			c := (i + k) % len(cells)
			times[c] = append(times[c], run(c, fmt.Sprintf("bench-%d-%d", i, c)))
		}
	}
	b.StopTimer()
	base := median(times[0])
	for c, cell := range cells {
		m := median(times[c])
		b.ReportMetric(float64(m)/1e6, cell.name+"-ms")
		if c > 0 {
			b.ReportMetric(float64(m)/float64(base), cell.name+"/runc")
		}
	}
}

func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkTaskStartCompile measures `ctr run --rm` of the Go wasm probe
// with an empty compile cache (the shim compiles) and with a warm one.
func BenchmarkTaskStartCompile(b *testing.B) {
	d := startWithProbe(b)
	var miss, hit []time.Duration
	for i := 0; i < b.N; i++ {
		for _, cold := range []bool{true, false} {
			if cold {
				if err := removeContents(d.CacheDir()); err != nil {
					b.Fatal(err)
				}
			}
			start := time.Now()
			r := d.Ctr(b, "run", "--rm", "--runtime", nebula, probeWasmImage, fmt.Sprintf("c-%d-%v", i, cold), "/probe.wasm", "hello")
			if r.ExitCode != 0 {
				b.Fatalf("exit %d: %s", r.ExitCode, r.Stderr)
			}
			if cold {
				miss = append(miss, time.Since(start))
			} else {
				hit = append(hit, time.Since(start))
			}
		}
	}
	b.ReportMetric(float64(median(miss))/1e6, "miss-ms")
	b.ReportMetric(float64(median(hit))/1e6, "hit-ms")
}

// BenchmarkFunctionLoad sends echo events over loopback to function tasks
// — a tiny WAT module as a command and as a reactor, the Go probe as a wasm
// command, as a reactor and as a process per event — and to a bare Go
// net/http echo handler in a process of its own
// (test/functions/floor), the floor. Each cell gets the same number of
// events from the same number of concurrent keep-alive clients, cells
// interleaved round by round. The load generator shares the machine's
// cores with the server.
//
// A cell's ratio to the floor is taken in each round, against the floor's
// rate in that round, and the median of those is reported: the machine's
// load changes from one round to the next, and a ratio of two medians
// taken in different rounds would mix that in.
//
//	go test -run '^$' -bench FunctionLoad -benchtime 5x ./test/e2e
func BenchmarkFunctionLoad(b *testing.B) {
	const events, clients = 10000, 4
	d := startWithProbe(b)
	floor := startFloor(b)
	cells := []struct {
		name, url, typ string
		n              int
	}{
		{"native-floor", floor, "probe.echo", events},
		{"wasm-tiny", startFunctionB(b, d, harness.EchoFnWasmImage, "load-tiny"), "probe.echo", events},
		{"wasm-tiny-reactor", startFunctionB(b, d, harness.EchoReactorImage, "load-tiny-reactor"), "probe.echo", events},
		{"wasm-go", startFunctionB(b, d, probeFnWasm, "load-go"), "probe.echo", events / 50},
		{"wasm-go-reactor", startFunctionB(b, d, harness.ProbeReactorImage, "load-go-reactor"), "probe.echo", events / 5},
		{"process", startFunctionB(b, d, probeFnNative, "load-process"), "probe.echo", events / 20},
	}
	rates := make([][]float64, len(cells))
	ratios := make([][]float64, len(cells))
	lat := make([][]time.Duration, len(cells))
	for i := 0; i < b.N; i++ {
		round := make([]float64, len(cells))
		for k := range cells {
			c := (i + k) % len(cells)
			rate, l := load(b, cells[c].url, cells[c].typ, cells[c].n, clients)
			round[c] = rate
			rates[c] = append(rates[c], rate)
			lat[c] = append(lat[c], l...)
		}
		for c := range cells {
			ratios[c] = append(ratios[c], round[c]/round[0])
		}
	}
	for c, cell := range cells {
		slices.Sort(lat[c])
		b.ReportMetric(medianF(rates[c]), cell.name+"-ev/s")
		b.ReportMetric(float64(lat[c][len(lat[c])/2])/1e3, cell.name+"-p50-µs")
		b.ReportMetric(float64(lat[c][len(lat[c])*99/100])/1e3, cell.name+"-p99-µs")
		if c > 0 {
			b.ReportMetric(medianF(ratios[c]), cell.name+"/floor")
		}
	}
}

// load sends n binary echo events with c clients and returns the rate and
// every latency.
func load(b *testing.B, url, typ string, n, c int) (float64, []time.Duration) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxConnsPerHost: c}, Timeout: 30 * time.Second}
	body := []byte(`{"message":"hello"}`)
	var mu sync.Mutex
	var lat []time.Duration
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var failed error
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Ce-Specversion", "1.0")
				req.Header.Set("Ce-Id", fmt.Sprint(i))
				req.Header.Set("Ce-Source", "/bench")
				req.Header.Set("Ce-Type", typ)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				if err != nil && failed == nil {
					failed = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	client.CloseIdleConnections()
	if failed != nil {
		b.Fatalf("%s: %v", url, failed)
	}
	return float64(n) / elapsed.Seconds(), lat
}

// startFloor runs test/functions/floor, a bare net/http echo, as a
// process of its own on loopback.
func startFloor(b *testing.B) string {
	root, err := harness.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "floor")
	build := exec.Command("go", "build", "-o", bin, "./test/functions/floor")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the floor: %v\n%s", err, out)
	}
	port := harness.FreePort(b)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Post(url, "text/plain", nil); err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			b.Fatal("the floor did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startFunctionB(b *testing.B, d *harness.Daemon, image, id string) string {
	return startFunction(b, d, image, id).URL
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianF(fs []float64) float64 {
	s := slices.Clone(fs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
