// Command goreactor is a minimal Go reactor for wasmhost's tests and
// benchmarks: each event's reply is a JSON object holding the event's data
// (stdin) and variables (nebula_v1.event_env). Stdin "counter" replies
// with a global counter incremented per event instead, "maphash" with the
// iteration order of a map, "rand" with a math/rand number: what a
// snapshot repeats.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o goreactor.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"unsafe"
)

//go:wasmimport nebula_v1 event_env
func eventEnv(buf unsafe.Pointer, n uint32) uint32

// env returns the event's variables.
func env() []string {
	n := eventEnv(nil, 0)
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	eventEnv(unsafe.Pointer(&b[0]), n)
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

var counter int

//go:wasmexport nebula_handle
func handle() int32 {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch string(data) {
	case "counter":
		counter++
		fmt.Println(counter)
		return 0
	case "maphash":
		m := map[int]bool{}
		for i := range 8 {
			m[i] = true
		}
		for k := range m {
			fmt.Print(k)
		}
		fmt.Println()
		return 0
	case "rand":
		fmt.Println(rand.Int())
		return 0
	}
	reply := struct {
		Data json.RawMessage `json:"data,omitempty"`
		Text string          `json:"text,omitempty"`
		Env  []string        `json:"env"`
	}{Env: env()}
	if json.Valid(data) {
		reply.Data = data
	} else {
		reply.Text = string(data)
	}
	if err := json.NewEncoder(os.Stdout).Encode(reply); err != nil {
		return 1
	}
	return 0
}

func main() {}
