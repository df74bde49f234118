package main

import (
	"strings"
	"testing"

	"nebula.dev/nebula/guest"
)

func TestGreet(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		http       bool
		want       string
		status     int
		err        string
	}{
		{"english", `{"name":"Ada"}`, false, `{"greeting":"Hello, Ada!","event":"7"}`, 0, ""},
		{"french", `{"name":"Ada","lang":"fr"}`, false, `{"greeting":"Bonjour, Ada!","event":"7"}`, 0, ""},
		{"http", `{"name":"Ada"}`, true, `{"greeting":"Hello, Ada!"}`, 201, ""},
		{"no name", `{}`, false, "", 0, "name is empty"},
		{"not JSON", `Ada`, false, "", 0, "want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &guest.Event{Data: []byte(tc.data)}
			if tc.http {
				e.Method = "POST"
			} else {
				e.ID = "7"
			}
			r, err := greet(e)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("greet = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || string(r.Data) != tc.want || r.Status != tc.status {
				t.Fatalf("greet = %+v, %v; want %s, status %d", r, err, tc.want, tc.status)
			}
		})
	}
}
