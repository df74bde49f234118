package harness

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Function is a function-mode task started with ctr on the host network,
// on loopback ports of its own.
type Function struct {
	ID      string
	URL     string // the event endpoint, http://127.0.0.1:PORT/
	Metrics string // http://127.0.0.1:METRICS_PORT/metrics
}

// StartFunction runs image (built with `nebula build --function`) with ctr,
// as a user would — `ctr run -d --runtime io.containerd.nebula.v1
// --net-host --env PORT=...` — and waits until /healthz answers 200. extra
// goes to ctr run before the image (annotations, env, limits).
func StartFunction(t T, d *Daemon, image, id string, extra ...string) Function {
	t.Helper()
	port, mport := FreePort(t), FreePort(t)
	args := []string{"run", "-d", "--runtime", "io.containerd.nebula.v1", "--net-host",
		"--env", "PORT=" + strconv.Itoa(port), "--env", "K_SERVICE=" + id, "--env", "FOO=bar",
		"--annotation", "nebula.dev/metrics-port=" + strconv.Itoa(mport)}
	args = append(append(args, extra...), image, id)
	d.MustCtr(t, args...)
	f := Function{ID: id, URL: fmt.Sprintf("http://127.0.0.1:%d/", port), Metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(f.URL + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("function %s not ready after 20s: %v\n%s", id, err, d.LogTail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a TCP port free on loopback right now.
func FreePort(t T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
