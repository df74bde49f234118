package events

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// cgiEnv returns the environment of a plain HTTP invocation, as CGI/1.1
// (RFC 3875 §4.1) defines it: the request's method, path, query, body
// type and length, the client's address, and every header as
// HTTP_<NAME> (upper-cased, '-' as '_', repeated headers joined with ", ").
// Content-Type and Content-Length are CONTENT_TYPE and CONTENT_LENGTH only;
// a Proxy header is dropped (httpoxy: it would become HTTP_PROXY).
func cgiEnv(r *http.Request, bodyLen int, tc traceContext) []string {
	env := make([]string, 0, 12+len(r.Header))
	host, port, _ := net.SplitHostPort(r.Host)
	if host == "" {
		host = r.Host
	}
	env = append(env,
		"GATEWAY_INTERFACE=CGI/1.1",
		"SERVER_PROTOCOL="+r.Proto,
		"SERVER_SOFTWARE=nebula",
		"SERVER_NAME="+host,
		"REQUEST_METHOD="+r.Method,
		"REQUEST_URI="+r.RequestURI,
		"SCRIPT_NAME=",
		"PATH_INFO="+r.URL.Path,
		"QUERY_STRING="+r.URL.RawQuery,
	)
	if port != "" {
		env = append(env, "SERVER_PORT="+port)
	}
	if a, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		env = append(env, "REMOTE_ADDR="+a, "REMOTE_PORT="+p)
	}
	if bodyLen > 0 {
		env = append(env, "CONTENT_LENGTH="+strconv.Itoa(bodyLen))
	}
	for k, vs := range r.Header {
		switch k {
		case "Content-Type":
			env = append(env, "CONTENT_TYPE="+strings.Join(vs, ", "))
			continue
		case "Content-Length", "Proxy":
			continue
		}
		env = append(env, "HTTP_"+cgiName(k)+"="+strings.Join(vs, ", "))
	}
	if tc.parent != "" {
		env = append(env, "TRACEPARENT="+tc.parent)
		if tc.state != "" {
			env = append(env, "TRACESTATE="+tc.state)
		}
	}
	return env
}

func cgiName(k string) string {
	b := []byte(k)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		case c == '-':
			b[i] = '_'
		}
	}
	return string(b)
}

// cgiResponse is a plain HTTP invocation's reply, from the guest's stdout.
type cgiResponse struct {
	status int
	header http.Header
	body   []byte
}

// maxCGIHeader bounds the header block a guest may start its stdout with.
const maxCGIHeader = 16 << 10

// parseCGIResponse reads a guest's stdout. When it starts with a CGI
// header block (RFC 3875 §6.2) — its first line a Status, Content-Type or
// Location header, the block ended by an empty line within 16 KiB — the
// block sets the status (Status: 404 Not Found; a Location alone means
// 302) and headers of the reply and the rest is the body. Otherwise all of
// stdout is the body of a 200. ok is false, with a reason, for a block
// that starts like one and is malformed.
func parseCGIResponse(out []byte) (resp cgiResponse, reason string, ok bool) {
	resp = cgiResponse{status: http.StatusOK, body: out}
	first, _, _ := bytes.Cut(out[:min(len(out), 64)], []byte{':'})
	switch strings.ToLower(string(first)) {
	case "status", "content-type", "location":
	default:
		return resp, "", true
	}
	block := out[:min(len(out), maxCGIHeader)]
	end, sep := bytes.Index(block, []byte("\n\n")), 2
	if i := bytes.Index(block, []byte("\r\n\r\n")); i >= 0 && (end < 0 || i < end) {
		end, sep = i, 4
	}
	if end < 0 {
		return resp, "", true // no end of a header block: it is all body
	}
	resp.header = http.Header{}
	resp.body = out[end+sep:]
	status := ""
	for _, line := range strings.Split(strings.ReplaceAll(string(out[:end]), "\r\n", "\n"), "\n") {
		name, value, found := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !found || !validToken(name) || !validFieldValue(value) {
			return resp, "malformed header line " + strconv.Quote(line) + " in the function's CGI response", false
		}
		k := http.CanonicalHeaderKey(name)
		switch k {
		case "Status":
			status = value
		case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Trailer", "Te", "Server-Timing":
			// The front door's to set.
		default:
			resp.header.Add(k, value)
		}
	}
	switch {
	case status != "":
		code, err := strconv.Atoi(strings.SplitN(status, " ", 2)[0])
		if err != nil || code < 200 || code > 599 {
			return resp, "invalid Status " + strconv.Quote(status) + " in the function's CGI response", false
		}
		resp.status = code
	case resp.header.Get("Location") != "":
		resp.status = http.StatusFound
	}
	return resp, "", true
}

// validFieldValue tells an HTTP field value (RFC 9110 §5.5): no control
// character but horizontal tab. HTTP/1 clients refuse a whole response
// with one ("malformed MIME header line"), so it is the function's error.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validToken tells an HTTP field name (RFC 9110 §5.6.2 token).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
