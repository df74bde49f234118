package guest

import (
	"bytes"
	"strings"
)

// Event is one invocation: a CloudEvent, or a plain HTTP request when
// Method is set.
type Event struct {
	// Data is the event's data (the request's body), decoded.
	Data []byte

	// The CloudEvent's context attributes; empty for a plain HTTP request.
	ID, Source, Type, SpecVersion string
	Subject, Time, DataSchema     string
	DataContentType               string
	// Extensions holds the extension attributes by their (lower-case)
	// names; nil without any.
	Extensions map[string]string

	// The plain HTTP request's method, path, query and body type; empty
	// for a CloudEvent.
	Method, Path, Query, ContentType string

	// TraceParent and TraceState are the W3C Trace Context of the
	// invocation, if the caller sent one.
	TraceParent, TraceState string

	vars []string // KEY=VALUE
}

// Getenv returns the value of one of the event's variables: the same names
// a command module finds in its environment (CE_TYPE, REQUEST_METHOD,
// HTTP_X_TENANT, ...), or "" if it is not set.
func (e *Event) Getenv(key string) string {
	v, _ := e.LookupEnv(key)
	return v
}

// LookupEnv is Getenv that also reports whether the variable is set.
func (e *Event) LookupEnv(key string) (string, bool) {
	for _, kv := range e.vars {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// Environ returns the event's variables as KEY=VALUE strings.
func (e *Event) Environ() []string { return append([]string(nil), e.vars...) }

// Header returns the value of a plain HTTP request's header, "" if absent
// (or for a CloudEvent).
func (e *Event) Header(name string) string {
	return e.Getenv("HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
}

// IsHTTP reports whether the event is a plain HTTP request rather than a
// CloudEvent.
func (e *Event) IsHTTP() bool { return e.Method != "" }

// newEvent builds an Event from its data and the block event_env returns:
// NUL-terminated KEY=VALUE entries.
func newEvent(data, block []byte) *Event {
	e := &Event{Data: data}
	for len(block) > 0 {
		entry, rest, _ := bytes.Cut(block, []byte{0})
		block = rest
		k, v, ok := strings.Cut(string(entry), "=")
		if !ok {
			continue
		}
		e.vars = append(e.vars, k+"="+v)
		if field := e.field(k); field != nil {
			*field = v
		} else if name, ok := strings.CutPrefix(k, "CE_"); ok && name != "" {
			if e.Extensions == nil {
				e.Extensions = map[string]string{}
			}
			e.Extensions[strings.ToLower(name)] = v
		}
	}
	return e
}

// field returns the Event field a variable fills, or nil.
func (e *Event) field(key string) *string {
	switch key {
	case "CE_ID":
		return &e.ID
	case "CE_SOURCE":
		return &e.Source
	case "CE_TYPE":
		return &e.Type
	case "CE_SPECVERSION":
		return &e.SpecVersion
	case "CE_SUBJECT":
		return &e.Subject
	case "CE_TIME":
		return &e.Time
	case "CE_DATASCHEMA":
		return &e.DataSchema
	case "CE_DATACONTENTTYPE":
		return &e.DataContentType
	case "REQUEST_METHOD":
		return &e.Method
	case "PATH_INFO":
		return &e.Path
	case "QUERY_STRING":
		return &e.Query
	case "CONTENT_TYPE":
		return &e.ContentType
	case "TRACEPARENT":
		return &e.TraceParent
	case "TRACESTATE":
		return &e.TraceState
	}
	return nil
}
