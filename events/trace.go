package events

import "net/http"

// traceContext is a request's W3C Trace Context: the traceparent and
// tracestate to hand the guest and to echo in the reply.
type traceContext struct {
	parent, state string
}

// traceID returns the trace-id of a valid traceparent, for exemplars.
func (tc *traceContext) traceID() string {
	if tc.parent == "" {
		return ""
	}
	return tc.parent[3:35]
}

// maxTraceState bounds tracestate: W3C Trace Context allows 32 list members
// of at most 256 characters each.
const maxTraceState = 32 * 257

// readTraceContext takes the traceparent and tracestate HTTP headers (W3C
// Trace Context), else the event's distributed-tracing extension
// (traceparent, tracestate attributes). An invalid traceparent is ignored
// with its tracestate, as W3C Trace Context §4.3 says a receiver must.
func readTraceContext(h http.Header, ev *inEvent) traceContext {
	var tc traceContext
	if v := h["Traceparent"]; len(v) > 0 {
		tc.parent = v[0]
		if s := h["Tracestate"]; len(s) > 0 {
			tc.state = s[0]
		}
	} else if ev != nil {
		for _, x := range ev.ext {
			switch x.name {
			case "traceparent":
				tc.parent = x.value
			case "tracestate":
				tc.state = x.value
			}
		}
	}
	if !validTraceparent(tc.parent) || len(tc.state) > maxTraceState || checkString(tc.state) != nil {
		return traceContext{}
	}
	return tc
}

// validTraceparent checks a version-00 traceparent (or a later version's
// first 55 characters followed by '-'): 00-<32 hex trace-id, not all
// zero>-<16 hex parent-id, not all zero>-<2 hex flags>.
func validTraceparent(v string) bool {
	if len(v) < 55 || (len(v) > 55 && (v[0:2] == "00" || v[55] != '-')) {
		return false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' || v[0:2] == "ff" {
		return false
	}
	return isLowerHex(v[0:2]) && isLowerHex(v[3:35]) && isLowerHex(v[36:52]) && isLowerHex(v[53:55]) &&
		v[3:35] != "00000000000000000000000000000000" && v[36:52] != "0000000000000000"
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
