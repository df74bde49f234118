package guest

import (
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
)

// Reply is what a handler returns.
type Reply struct {
	// Data is the reply's data (a plain HTTP response's body). For a
	// CloudEvent, non-empty data is sent back as a reply event; empty data
	// answers 202 Accepted.
	Data []byte
	// Status is a plain HTTP response's status code, 200 when zero (202 when
	// Data is empty as well). For a CloudEvent, a status of 400 or more
	// fails the invocation (500) like a returned error.
	Status int
	// Header holds a plain HTTP response's headers (Content-Type, Location,
	// ...); ignored for a CloudEvent, whose reply attributes Nebula sets.
	Header map[string]string
}

// errStatus is a CloudEvent reply with a failure status.
var errStatus = errors.New("handler replied with a failure status")

// write writes r to the instance's stdout as the reply to e: the data for
// a CloudEvent; for a plain HTTP request, a CGI header block first when a
// status or a header is set or the data could be mistaken for one.
func (r *Reply) write(w io.Writer, e *Event) error {
	if r == nil {
		return nil
	}
	if !e.IsHTTP() {
		if r.Status >= 400 {
			return fmt.Errorf("%w: %d", errStatus, r.Status)
		}
		_, err := w.Write(r.Data)
		return err
	}
	if r.Status == 0 && len(r.Header) == 0 && len(r.Data) == 0 {
		return nil
	}
	head, err := r.cgiHeader()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, head); err != nil {
		return err
	}
	_, err = w.Write(r.Data)
	return err
}

// cgiHeader renders the CGI header block (RFC 3875 §6.2) of a plain HTTP
// reply, its headers sorted.
func (r *Reply) cgiHeader() (string, error) {
	status := r.Status
	if status == 0 {
		status = 200
	}
	if status < 200 || status > 599 {
		return "", fmt.Errorf("reply status %d is not between 200 and 599", status)
	}
	var b strings.Builder
	b.WriteString("Status: " + strconv.Itoa(status) + "\r\n")
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		value := r.Header[name]
		if !validHeaderName(name) || strings.ContainsAny(value, "\r\n\x00") {
			return "", fmt.Errorf("reply header %q: invalid name or value", name)
		}
		if strings.EqualFold(name, "Status") {
			return "", errors.New("reply header Status: use Reply.Status")
		}
		b.WriteString(textproto.CanonicalMIMEHeaderKey(name) + ": " + value + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String(), nil
}

// validHeaderName tells an HTTP field name (RFC 9110 §5.6.2 token). The
// front door checks the same (package events); a guest must not link the
// front door, nor net/http, into every function's module.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
