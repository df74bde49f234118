package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// block renders variables as event_env returns them.
func block(vars ...string) []byte {
	var b []byte
	for _, v := range vars {
		b = append(append(b, v...), 0)
	}
	return b
}

// with registers h for the duration of the test.
func with(t *testing.T, h Handler) {
	t.Helper()
	handler = nil
	Handle(h)
	t.Cleanup(func() { handler = nil })
}

func TestNewEventCloudEvent(t *testing.T) {
	e := newEvent([]byte("hi"), block("CE_SPECVERSION=1.0", "CE_ID=42", "CE_SOURCE=/s", "CE_TYPE=t.x",
		"CE_SUBJECT=sub", "CE_TIME=2026-11-27T00:00:00Z", "CE_DATACONTENTTYPE=text/plain",
		"CE_DATASCHEMA=https://s", "CE_TENANTID=acme", "CE_=odd", "TRACEPARENT=00-abc-def-01", "junk"))
	want := Event{Data: []byte("hi"), ID: "42", Source: "/s", Type: "t.x", SpecVersion: "1.0", Subject: "sub",
		Time: "2026-11-27T00:00:00Z", DataSchema: "https://s", DataContentType: "text/plain", TraceParent: "00-abc-def-01"}
	if string(e.Data) != "hi" || e.ID != want.ID || e.Source != want.Source || e.Type != want.Type ||
		e.SpecVersion != want.SpecVersion || e.Subject != want.Subject || e.Time != want.Time ||
		e.DataSchema != want.DataSchema || e.DataContentType != want.DataContentType || e.TraceParent != want.TraceParent {
		t.Errorf("event = %+v, want %+v", e, want)
	}
	if len(e.Extensions) != 1 || e.Extensions["tenantid"] != "acme" {
		t.Errorf("extensions = %v, want tenantid=acme only", e.Extensions)
	}
	if e.IsHTTP() {
		t.Error("a CloudEvent reported as plain HTTP")
	}
	if v, ok := e.LookupEnv("CE_=odd"); ok {
		t.Errorf("LookupEnv of a key with '=' found %q", v)
	}
	if got := e.Getenv("CE_TENANTID"); got != "acme" {
		t.Errorf("Getenv(CE_TENANTID) = %q", got)
	}
	if n := len(e.Environ()); n != 11 {
		t.Errorf("Environ has %d entries, want 11 (the malformed one dropped): %q", n, e.Environ())
	}
}

func TestNewEventHTTP(t *testing.T) {
	e := newEvent(nil, block("REQUEST_METHOD=PUT", "PATH_INFO=/orders/7", "QUERY_STRING=a=b&c", "CONTENT_TYPE=application/json",
		"HTTP_X_TENANT=acme", "HTTP_ACCEPT=*/*"))
	if !e.IsHTTP() || e.Method != "PUT" || e.Path != "/orders/7" || e.Query != "a=b&c" || e.ContentType != "application/json" {
		t.Errorf("event = %+v", e)
	}
	if got := e.Header("x-tenant"); got != "acme" {
		t.Errorf("Header(x-tenant) = %q, want acme", got)
	}
	if got := e.Header("Authorization"); got != "" {
		t.Errorf("Header(Authorization) = %q, want empty", got)
	}
	if e.Extensions != nil {
		t.Errorf("plain HTTP event has extensions %v", e.Extensions)
	}
}

func TestServe(t *testing.T) {
	ce := block("CE_SPECVERSION=1.0", "CE_ID=1", "CE_SOURCE=/s", "CE_TYPE=t")
	http := block("REQUEST_METHOD=POST", "PATH_INFO=/")
	fail := errors.New("boom")
	for _, tc := range []struct {
		name         string
		env          []byte
		h            Handler
		status       int32
		stdout, logs string
	}{
		{"echo", ce, func(e *Event) (*Reply, error) { return &Reply{Data: e.Data}, nil }, 0, "in", ""},
		{"nil reply", ce, func(*Event) (*Reply, error) { return nil, nil }, 0, "", ""},
		{"error", ce, func(*Event) (*Reply, error) { return nil, fail }, 1, "", "guest: boom\n"},
		{"ce failure status", ce, func(*Event) (*Reply, error) { return &Reply{Status: 404, Data: []byte("x")}, nil }, 1, "",
			"guest: handler replied with a failure status: 404\n"},
		{"ce ignores headers", ce, func(*Event) (*Reply, error) {
			return &Reply{Header: map[string]string{"A": "b"}, Data: []byte("x")}, nil
		}, 0, "x", ""},
		{"panic", ce, func(*Event) (*Reply, error) { panic("oops") }, 2, "", "panic: oops\n"},
		{"http body", http, func(e *Event) (*Reply, error) { return &Reply{Data: []byte("Status: 500\n\nnot a header")}, nil }, 0,
			"Status: 200\r\n\r\nStatus: 500\n\nnot a header", ""},
		{"http empty", http, func(*Event) (*Reply, error) { return &Reply{}, nil }, 0, "", ""},
		{"http status and headers", http, func(*Event) (*Reply, error) {
			return &Reply{Status: 201, Header: map[string]string{"location": "/orders/8", "Content-Type": "text/plain"}}, nil
		}, 0, "Status: 201\r\nContent-Type: text/plain\r\nLocation: /orders/8\r\n\r\n", ""},
		{"http bad status", http, func(*Event) (*Reply, error) { return &Reply{Status: 99}, nil }, 1, "", "guest: reply status 99 is not between 200 and 599\n"},
		{"http header injection", http, func(*Event) (*Reply, error) {
			return &Reply{Header: map[string]string{"X": "a\r\nSet-Cookie: b"}}, nil
		}, 1, "", "guest: reply header \"X\": invalid name or value\n"},
		{"http bad header name", http, func(*Event) (*Reply, error) { return &Reply{Header: map[string]string{"a b": "c"}}, nil }, 1, "",
			"guest: reply header \"a b\": invalid name or value\n"},
		{"http Status header", http, func(*Event) (*Reply, error) { return &Reply{Header: map[string]string{"status": "404"}}, nil }, 1, "",
			"guest: reply header Status: use Reply.Status\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			with(t, tc.h)
			var stdout, stderr bytes.Buffer
			status := serve(strings.NewReader("in"), &stdout, &stderr, tc.env)
			if status != tc.status || stdout.String() != tc.stdout || !strings.HasPrefix(stderr.String(), tc.logs) || (tc.logs == "") != (stderr.Len() == 0) {
				t.Errorf("serve = %d, stdout %q, stderr %q; want %d, %q, %q", status, stdout.String(), stderr.String(), tc.status, tc.stdout, tc.logs)
			}
		})
	}
}

// The host's warm-up call (no variables) runs the handler, discards what
// it writes and succeeds whatever the handler thought of an empty event.
func TestServeWarmup(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Handler
	}{
		{"reply", func(e *Event) (*Reply, error) { return &Reply{Data: []byte("x")}, nil }},
		{"error", func(*Event) (*Reply, error) { return nil, errors.New("empty event") }},
		{"panic", func(*Event) (*Reply, error) { panic("empty event") }},
		{"bad status", func(*Event) (*Reply, error) { return &Reply{Status: 500}, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			with(t, func(e *Event) (*Reply, error) {
				called = true
				if len(e.Data) != 0 || e.ID != "" || e.IsHTTP() || len(e.Environ()) != 0 {
					t.Errorf("warm-up event %+v is not empty", e)
				}
				return tc.h(e)
			})
			var stdout, stderr bytes.Buffer
			if status := serve(strings.NewReader(""), &stdout, &stderr, nil); status != 0 || !called || stdout.Len()+stderr.Len() != 0 {
				t.Errorf("warm-up: status %d, handler called %v, stdout %q, stderr %q; want 0, true, nothing", status, called, stdout.String(), stderr.String())
			}
		})
	}
	handler = nil
	if status := serve(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, nil); status != statusNoHandler {
		t.Errorf("warm-up without a handler: status %d, want %d (the host then snapshots without it)", status, statusNoHandler)
	}
}

func TestServeWithoutHandler(t *testing.T) {
	handler = nil
	var stderr bytes.Buffer
	if status := serve(strings.NewReader(""), &bytes.Buffer{}, &stderr, block("CE_ID=1")); status != statusNoHandler || !strings.Contains(stderr.String(), "guest.Handle") {
		t.Errorf("serve = %d, %q", status, stderr.String())
	}
}

func TestHandleTwicePanics(t *testing.T) {
	with(t, func(*Event) (*Reply, error) { return nil, nil })
	defer func() {
		if recover() == nil {
			t.Error("a second Handle did not panic")
		}
	}()
	Handle(func(*Event) (*Reply, error) { return nil, nil })
}
