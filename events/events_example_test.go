package events_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/events"
)

// upper is a stand-in for a wasm or process invoker: the "function"
// upper-cases its stdin.
type upper struct{}

func (upper) Runtime() string { return abi.RuntimeWasm }

func (upper) Invoke(_ context.Context, req *abi.Request) (*abi.Response, error) {
	return &abi.Response{Stdout: bytes.ToUpper(req.Stdin)}, nil
}

// A binary-mode CloudEvent in, a binary-mode reply event out.
func Example() {
	srv, err := events.New(upper{}, events.NewConfig().WithFunction("shout"))
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	req, _ := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader("hello"))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", "42")
	req.Header.Set("Ce-Source", "/example")
	req.Header.Set("Ce-Type", "com.example.greeting")
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)

	fmt.Println(resp.Status)
	fmt.Println("type:", resp.Header.Get("Ce-Type"))
	fmt.Println("source:", resp.Header.Get("Ce-Source"))
	fmt.Println("datacontenttype:", resp.Header.Get("Content-Type"))
	fmt.Println("data:", string(data))
	fmt.Println("timed:", strings.HasPrefix(resp.Header.Get("Server-Timing"), "queue;dur="))
	// Output:
	// 200 OK
	// type: com.example.greeting.reply
	// source: /nebula/shout
	// datacontenttype: text/plain; charset=utf-8
	// data: HELLO
	// timed: true
}
