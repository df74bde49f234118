package events_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// noop is the cheapest possible invoker: it returns a fixed reply.
type noop struct{ out []byte }

func (noop) Runtime() string { return abi.RuntimeWasm }

func (n noop) Invoke(context.Context, *abi.Request) (*abi.Response, error) {
	return &abi.Response{Stdout: n.out}, nil
}

type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

type body struct{ strings.Reader }

func (*body) Close() error { return nil }

func benchServer(b *testing.B, out string) *events.Server {
	srv, err := events.New(noop{[]byte(out)}, events.NewConfig().WithFunction("bench").WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// BenchmarkHandler is the front door's own cost per event: parsing,
// admission, CE_* env, the invoker call, the reply and metrics, without
// the network.
func BenchmarkHandler(b *testing.B) {
	for _, bc := range []struct {
		name, out, ct, data string
		structured          bool
	}{
		{name: "binary/202", ct: "application/json", data: `{"n":1}`},
		{name: "binary/200", out: `{"ok":true}`, ct: "application/json", data: `{"n":1}`},
		{name: "structured/200", out: `{"ok":true}`, structured: true,
			data: `{"specversion":"1.0","id":"abc-123","source":"/bench","type":"com.example.ping","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","datacontenttype":"application/json","data":{"n":1}}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := benchServer(b, bc.out).Handler()
			r, _ := http.NewRequest(http.MethodPost, "/", nil)
			if bc.structured {
				r.Header.Set("Content-Type", "application/cloudevents+json")
			} else {
				r.Header.Set("Ce-Specversion", "1.0")
				r.Header.Set("Ce-Id", "abc-123")
				r.Header.Set("Ce-Source", "/bench")
				r.Header.Set("Ce-Type", "com.example.ping")
				r.Header.Set("Ce-Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
				r.Header.Set("Content-Type", bc.ct)
			}
			r.ContentLength = int64(len(bc.data))
			var rb body
			r.Body = &rb
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				rb.Reset(bc.data)
				clear(w.h)
				h.ServeHTTP(w, r)
				if w.code != 200 && w.code != 202 {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
}

// BenchmarkServe is events over loopback HTTP with keep-alive connections,
// as queue-proxy sends them: the throughput of the whole front door with a
// no-op guest. Reported as events/s.
func BenchmarkServe(b *testing.B) {
	for _, proto := range []string{"http1", "h2c"} {
		b.Run(proto, func(b *testing.B) {
			srv := benchServer(b, `{"ok":true}`)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(context.Background(), ln)
			defer srv.Shutdown(context.Background())
			var p http.Protocols
			if proto == "h2c" {
				p.SetUnencryptedHTTP2(true)
			} else {
				p.SetHTTP1(true)
			}
			c := &http.Client{Transport: &http.Transport{Protocols: &p, MaxIdleConnsPerHost: 64}}
			url := "http://" + ln.Addr().String() + "/"
			var failed atomic.Int64
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"n":1}`))
					r.Header.Set("Ce-Specversion", "1.0")
					r.Header.Set("Ce-Id", "abc-123")
					r.Header.Set("Ce-Source", "/bench")
					r.Header.Set("Ce-Type", "com.example.ping")
					r.Header.Set("Content-Type", "application/json")
					resp, err := c.Do(r)
					if err != nil {
						failed.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d requests failed", n)
			}
		})
	}
}
