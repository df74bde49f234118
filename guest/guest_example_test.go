package guest_test

import (
	"strings"

	"nebula.dev/nebula/guest"
)

// A function that greets whoever the event's subject names, and answers a
// plain HTTP request with a created resource.
func ExampleHandle() {
	guest.Handle(func(e *guest.Event) (*guest.Reply, error) {
		if e.IsHTTP() {
			return &guest.Reply{
				Status: 201,
				Header: map[string]string{"Location": "/greetings/1"},
				Data:   []byte("created\n"),
			}, nil
		}
		name := strings.TrimSpace(e.Subject)
		if name == "" {
			name = "world"
		}
		return &guest.Reply{Data: []byte(`{"greeting":"hello, ` + name + `"}`)}, nil
	})
}
