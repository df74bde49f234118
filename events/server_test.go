package events_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// serving starts srv on a loopback port and returns its URL and Serve's
// result.
func serving(t *testing.T, srv *events.Server, ctx context.Context) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String(), done
}

func newServer(t *testing.T, f *fake, cfg events.Config) *events.Server {
	t.Helper()
	srv, err := events.New(f, cfg.WithFunction("fn").WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func post(t *testing.T, c *http.Client, url, typ string) (*http.Response, error) {
	t.Helper()
	r, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("ping"))
	r.Header.Set("Ce-Specversion", "1.0")
	r.Header.Set("Ce-Id", "1")
	r.Header.Set("Ce-Source", "/s")
	r.Header.Set("Ce-Type", typ)
	r.Header.Set("Content-Type", "text/plain")
	resp, err := c.Do(r)
	if err == nil {
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func TestServeHTTP1AndH2C(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig())
	url, _ := serving(t, srv, context.Background())

	resp, err := post(t, http.DefaultClient, url, "t")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.1: %d %s", resp.StatusCode, resp.Proto)
	}

	// HTTP/2 with prior knowledge, as Knative's queue-proxy speaks it to
	// a port named h2c.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	resp, err = post(t, h2c, url, "t")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("h2c: %d %s", resp.StatusCode, resp.Proto)
	}
	if resp.Header.Get("Ce-Type") != "t.reply" || resp.Header.Get("Server-Timing") == "" {
		t.Fatalf("h2c reply headers %v", resp.Header)
	}
}

func TestShutdownDrains(t *testing.T) {
	f := &fake{block: make(chan struct{}), started: make(chan struct{}, 1)}
	srv := newServer(t, f, events.NewConfig())
	url, served := serving(t, srv, context.Background())

	inflight := make(chan *http.Response, 1)
	go func() {
		resp, err := post(t, &http.Client{}, url, "block")
		if err != nil {
			t.Error(err)
		}
		inflight <- resp
	}()
	<-f.started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()

	// New connections are refused once Shutdown closed the listener.
	addr := strings.TrimPrefix(url, "http://")
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with an invocation in flight", err)
	default:
	}

	close(f.block)
	if resp := <-inflight; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("in-flight invocation: %v", resp)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestShutdownRefusesOnOpenConnections(t *testing.T) {
	// A request reaching the handler while draining (e.g. through Handler
	// mounted elsewhere) gets 503, and readiness fails.
	h := newHarness(t, events.NewConfig())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.srv.Shutdown(ctx)
	resp := h.do(binaryReq("t", "", ""))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("event while draining: %d", resp.StatusCode)
	}
	if resp := h.do(httptestGet("/health/readiness")); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readiness while draining: %d", resp.StatusCode)
	}
	if resp := h.do(httptestGet("/health/liveness")); resp.StatusCode != http.StatusOK {
		t.Fatalf("liveness while draining: %d", resp.StatusCode)
	}
}

func httptestGet(path string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, path, nil)
	return r
}

func TestShutdownDeadlineAborts(t *testing.T) {
	f := &fake{block: make(chan struct{}), started: make(chan struct{}, 1)}
	srv := newServer(t, f, events.NewConfig())
	url, _ := serving(t, srv, context.Background())
	go post(t, &http.Client{}, url, "block")
	<-f.started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
}

func TestServeContextIsHardStop(t *testing.T) {
	f := &fake{block: make(chan struct{}), started: make(chan struct{}, 1)}
	srv := newServer(t, f, events.NewConfig())
	ctx, cancel := context.WithCancel(context.Background())
	url, served := serving(t, srv, ctx)
	errc := make(chan error, 1)
	go func() { _, err := post(t, &http.Client{}, url, "block"); errc <- err }()
	<-f.started
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
	<-errc
}

func TestServeMetrics(t *testing.T) {
	srv := newServer(t, &fake{}, events.NewConfig())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeMetrics(context.Background(), ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "nebula_queue_depth") {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ServeMetrics: %v", err)
	}
}

func TestClientGone(t *testing.T) {
	f := &fake{block: make(chan struct{}), started: make(chan struct{}, 1)}
	srv := newServer(t, f, events.NewConfig())
	url, _ := serving(t, srv, context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
	r.Header.Set("Ce-Specversion", "1.0")
	r.Header.Set("Ce-Id", "1")
	r.Header.Set("Ce-Source", "/s")
	r.Header.Set("Ce-Type", "block")
	go func() { <-f.started; cancel() }()
	if _, err := http.DefaultClient.Do(r); err == nil {
		t.Fatal("request not cancelled")
	}
	// The invocation was stopped and counted as 499.
	reg := prometheus.NewRegistry()
	_ = reg
	waitFor(t, func() bool {
		fams := scrape(t, srv.MetricsHandler())
		for _, m := range fams["nebula_invocations_total"].GetMetric() {
			if label(m, "code") == "499" && m.GetCounter().GetValue() == 1 {
				return true
			}
		}
		return false
	})
}

var _ abi.Invoker = (*fake)(nil)
