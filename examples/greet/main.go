// Command greet is an example Nebula function in Go, built as a reactor
// with package guest: Go initialises it once per task, and each event runs
// in an instance restored from that state.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o greet.wasm .
//	nebula build greet.wasm --function -t localhost/nebula/greet:v1 -o greet.tar
//
// A CloudEvent of type greet.hello with data {"name":"Ada"} gets the reply
// {"greeting":"Hello, Ada!","event":"<its id>"}; a plain HTTP POST with the
// same body gets the same JSON with status 201.
package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"nebula.dev/nebula/guest"
)

// greetings is computed once, during initialisation; every event sees it
// as init left it.
var greetings = map[string]string{"en": "Hello", "fr": "Bonjour", "de": "Hallo"}

type request struct {
	Name string `json:"name"`
	Lang string `json:"lang"`
}

type reply struct {
	Greeting string `json:"greeting"`
	Event    string `json:"event,omitempty"`
}

func init() {
	guest.Handle(greet)
}

func greet(e *guest.Event) (*guest.Reply, error) {
	var req request
	if err := json.Unmarshal(e.Data, &req); err != nil {
		return nil, fmt.Errorf("want a JSON object {\"name\": ..., \"lang\": ...}: %w", err)
	}
	if req.Name == "" {
		return nil, errors.New("name is empty")
	}
	word, ok := greetings[req.Lang]
	if !ok {
		word = greetings["en"]
	}
	data, err := json.Marshal(reply{Greeting: word + ", " + req.Name + "!", Event: e.ID})
	if err != nil {
		return nil, err
	}
	r := &guest.Reply{Data: data}
	if e.IsHTTP() {
		r.Status = 201
		r.Header = map[string]string{"Content-Type": "application/json"}
	}
	return r, nil
}

func main() {} // a reactor's main is never called
