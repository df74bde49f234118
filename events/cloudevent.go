package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// mode is a request's CloudEvents content mode.
type mode uint8

const (
	modeBinary mode = iota + 1
	modeStructured
)

// specVersion is the only CloudEvents version the front door accepts.
const specVersion = event.CloudEventsVersionV1

// inEvent is what the front door needs of an incoming event: its
// attributes as strings (absent = empty) and its data, decoded.
type inEvent struct {
	id, source, typ                       string
	subject, time, dataschema, contentTyp string
	ext                                   []extension
	data                                  []byte
	extBuf                                [4]extension
}

// extension is an extension attribute; name may be in any case (binary
// mode keeps the header's spelling).
type extension struct{ name, value string }

// errStatus is a client error with the status it maps to.
type errStatus struct {
	code int
	msg  string
}

func (e *errStatus) Error() string { return e.msg }

func badRequest(msg string) error  { return &errStatus{http.StatusBadRequest, msg} }
func unsupported(msg string) error { return &errStatus{http.StatusUnsupportedMediaType, msg} }

var (
	errBatch          = unsupported("batched CloudEvents (application/cloudevents-batch) are not supported")
	errNotCloudEvent  = unsupported("not a CloudEvent: no ce-specversion header and not application/cloudevents+json")
	errSpecVersion    = unsupported("unsupported CloudEvents specversion, want 1.0")
	errUnknownFormat  = unsupported("unknown structured CloudEvents format, want application/cloudevents+json")
	errMalformedJSON  = badRequest("malformed JSON in structured CloudEvent")
	errBadTime        = badRequest("ce-time: not an RFC 3339 timestamp")
	errBadSchema      = badRequest("ce-dataschema: MUST be an absolute URI")
	errDataContentTyp = badRequest("binary mode: the ce-datacontenttype header MUST NOT be used (use Content-Type)")

	errHeaderQuote  = errors.New("malformed quoted-string (RFC 7230 §3.2.6)")
	errHeaderEscape = errors.New("malformed percent-encoding (HTTP binding §3.1.3.2)")
	errControlChar  = errors.New("control character in a CloudEvents String")
	errInvalidUTF8  = errors.New("invalid UTF-8 after percent-decoding (HTTP binding §3.1.3.2)")
)

// contentMode finds a request's mode from its headers alone (CloudEvents HTTP
// binding §3, as sdk-go's cehttp.NewMessage does), before reading the body.
func contentMode(h http.Header) (mode, error) {
	var ct string
	if v := h["Content-Type"]; len(v) > 0 {
		ct = v[0]
	}
	if len(ct) >= len("application/cloudevents") && strings.EqualFold(ct[:len("application/cloudevents")], "application/cloudevents") {
		mt := ct
		if i := strings.IndexByte(mt, ';'); i >= 0 {
			mt = mt[:i]
		}
		mt = strings.ToLower(strings.TrimSpace(mt))
		switch {
		case strings.HasPrefix(mt, "application/cloudevents-batch"):
			return 0, errBatch
		case format.Lookup(mt) == format.JSON:
			return modeStructured, nil
		}
		// An unknown structured format: sdk-go falls back to binary mode
		// when ce-specversion is present (the binding allows it).
		if len(h["Ce-Specversion"]) == 0 {
			return 0, errUnknownFormat
		}
	}
	sv := h["Ce-Specversion"]
	if len(sv) == 0 {
		return 0, errNotCloudEvent
	}
	if sv[0] != specVersion {
		return 0, errSpecVersion
	}
	return modeBinary, nil
}

// validCache remembers the last value that passed an expensive check
// (url.Parse, mime.ParseMediaType): a function usually sees the same few
// sources and content types over and over.
type validCache struct{ last atomic.Pointer[string] }

func (c *validCache) check(v string, valid func(string) bool) bool {
	if p := c.last.Load(); p != nil && *p == v {
		return true
	}
	if !valid(v) {
		return false
	}
	c.remember(v)
	return true
}

// remember is apart from check so that only a miss moves v to the heap.
//
//go:noinline
func (c *validCache) remember(v string) { c.last.Store(&v) }

func validURIRef(s string) bool { _, err := url.Parse(s); return err == nil }

func validAbsURI(s string) bool { u, err := url.Parse(s); return err == nil && u.IsAbs() }

func validMediaType(s string) bool { _, _, err := mime.ParseMediaType(s); return err == nil }

// parser validates events with sdk-go's rules, caching the costly checks.
type parser struct {
	sources, contentTypes validCache
}

// parseBinary reads a binary-mode event from its headers (HTTP binding
// §3.1): one header per attribute, the first value wins, ce-<name> is
// attribute <name> (header names are case-insensitive, attribute names
// lower-case), Content-Type is datacontenttype, and every ce-* value is
// unquoted and percent-decoded (§3.1.3.2, decodeHeaderValue). body becomes
// the data.
func (p *parser) parseBinary(h http.Header, body []byte, ev *inEvent) error {
	for k, vs := range h {
		if len(vs) == 0 || !strings.HasPrefix(k, "Ce-") {
			if k == "Content-Type" && len(vs) > 0 {
				ev.contentTyp = strings.TrimSpace(vs[0])
			}
			continue
		}
		if k == "Ce-Specversion" { // checked by contentMode
			continue
		}
		raw := vs[0]
		if k == "Ce-Subject" {
			raw = strings.TrimSpace(raw)
		}
		v, err := decodeHeaderValue(raw)
		if err != nil {
			return badRequest(strings.ToLower(k) + ": " + err.Error())
		}
		if err := setBinaryAttribute(ev, k, v); err != nil {
			return err
		}
	}
	if ev.time != "" {
		t, err := parseTime(ev.time)
		if err != nil {
			return errBadTime
		}
		ev.time = t
	}
	if ev.dataschema != "" && !validAbsURI(ev.dataschema) {
		return errBadSchema
	}
	if err := p.validate(ev); err != nil {
		return err
	}
	if len(body) > 0 {
		ev.data = body
	}
	return nil
}

// setBinaryAttribute sets the attribute of header k (canonical, "Ce-…")
// to its decoded value v.
func setBinaryAttribute(ev *inEvent, k, v string) error {
	switch k {
	case "Ce-Id":
		ev.id = v
	case "Ce-Source":
		ev.source = v
	case "Ce-Type":
		ev.typ = v
	case "Ce-Subject":
		ev.subject = v
	case "Ce-Time":
		if v == "" { // present but empty
			return errBadTime
		}
		ev.time = v
	case "Ce-Dataschema":
		if v == "" {
			return errBadSchema
		}
		ev.dataschema = v
	default:
		// A bare "Ce-" header is an empty name: invalid (sdk-go v2.16.2
		// panics on it).
		name := k[3:]
		if !validExtName(name) {
			return badRequest("invalid CloudEvents extension name in header " + k + ": MUST be [a-z0-9]")
		}
		if strings.EqualFold(name, "datacontenttype") {
			return errDataContentTyp
		}
		ev.ext = append(ev.ext, extension{strings.ToLower(name), v})
	}
	return nil
}

// parseTime parses an RFC 3339 timestamp, whose "T" and "Z" may be lower
// case (RFC 3339 §5.6, NOTE), and returns it as sdk-go prints times: UTC,
// RFC 3339 with nanoseconds as needed.
func parseTime(v string) (string, error) {
	if len(v) > 10 && (v[10] == 't' || v[len(v)-1] == 'z') {
		b := []byte(v)
		if b[10] == 't' {
			b[10] = 'T'
		}
		if b[len(b)-1] == 'z' {
			b[len(b)-1] = 'Z'
		}
		v = string(b)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return "", err
	}
	return types.FormatTime(t), nil
}

// validate applies the rules of sdk-go's EventContextV1.Validate that the
// parsers share.
func (p *parser) validate(ev *inEvent) error {
	if strings.TrimSpace(ev.id) == "" {
		return badRequest("id: MUST be a non-empty string")
	}
	if ev.source == "" {
		return badRequest("source: REQUIRED")
	}
	if !p.sources.check(ev.source, validURIRef) {
		return badRequest("source: MUST be a URI-reference")
	}
	if strings.TrimSpace(ev.typ) == "" {
		return badRequest("type: MUST be a non-empty string")
	}
	if ev.contentTyp != "" && !p.contentTypes.check(ev.contentTyp, validMediaType) {
		return badRequest("datacontenttype: MUST be an RFC 2046 media type")
	}
	return nil
}

// validExtName reports whether s is a valid attribute name as sdk-go
// checks it: ASCII letters and digits (it lower-cases afterwards).
func validExtName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// parseStructured reads a structured-mode event in the CloudEvents JSON
// Event Format with the rules of the format itself rather than sdk-go's
// (which lower-cases member names, truncates 1.5 to 1 and takes
// data_base64 over data):
//
//   - the document is one JSON object (encoding/json's strict grammar);
//   - every member is an attribute, "data" or "data_base64", and an
//     attribute name is lower-case letters and digits (spec §Attribute
//     Naming Convention);
//   - a null member is absent (§2.2);
//   - the core attributes are JSON strings; an extension is a string, a
//     boolean or an integer in the 32-bit range written without fraction or
//     exponent (§2.2); objects and arrays have no CloudEvents type;
//   - "data" and "data_base64" are mutually exclusive (§3.1.1);
//   - data_base64 is decoded (§3.1.2); data is taken as the JSON value it
//     is when datacontenttype declares JSON (*/json, */*+json) or is absent
//     — then CE_DATACONTENTTYPE is application/json (§3.1.2) — and must be
//     a JSON string, whose content is the data, otherwise.
func (p *parser) parseStructured(body []byte, ev *inEvent) error {
	if !json.Valid(body) {
		return errMalformedJSON
	}
	if attributeBytes(body) > maxAttributeBytes {
		return errAttributesTooLarge
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return badRequest("structured CloudEvent: not a JSON object")
	}
	sv, data, err := readMembers(members, ev)
	if err != nil {
		return err
	}
	switch {
	case sv == "":
		return badRequest("specversion: REQUIRED")
	case sv != specVersion:
		return errSpecVersion
	}
	if ev.time != "" {
		t, err := parseTime(ev.time)
		if err != nil {
			return badRequest("time: not an RFC 3339 timestamp")
		}
		ev.time = t
	}
	if ev.dataschema != "" && !validAbsURI(ev.dataschema) {
		return badRequest("dataschema: MUST be an absolute URI")
	}
	if err := p.validate(ev); err != nil {
		return err
	}
	return data.decode(ev)
}

// maxAttributeBytes bounds a structured event's attributes, every member
// but data and data_base64, names and values as written: what a binary
// event's headers may hold (MaxHeaderBytes). Decoding them costs the host
// tens of times their size, outside the body budget, and each becomes a
// variable of the guest's environment.
const maxAttributeBytes = MaxHeaderBytes

var errAttributesTooLarge = &errStatus{http.StatusRequestEntityTooLarge,
	"structured CloudEvent: its attributes (every member but data) exceed 64 KiB, what a binary event's headers hold"}

// attributeBytes returns the bytes of the members of body, valid JSON,
// other than "data" and "data_base64": their names and values as
// written. It is 0 if body is not an object.
func attributeBytes(body []byte) int {
	i := skipJSONSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return 0
	}
	n := 0
	for i++; ; {
		i = skipJSONSpace(body, i)
		if i == len(body) || body[i] == '}' {
			return n
		}
		if body[i] == ',' {
			i++
			continue
		}
		name := i
		i = skipJSONString(body, i)
		key := body[name:i]
		i = skipJSONSpace(body, i) + 1 // the colon
		value := skipJSONSpace(body, i)
		i = skipJSONValue(body, value)
		if k := string(key); k != `"data"` && k != `"data_base64"` {
			n += len(key) + i - value
		}
	}
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipJSONString returns the index after the string starting at b[i].
func skipJSONString(b []byte, i int) int {
	start := i + 1
	for i = start; ; i++ {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return len(b)
		}
		i += j
		k := i
		for k > start && b[k-1] == '\\' {
			k--
		}
		if (i-k)%2 == 0 { // not escaped
			return i + 1
		}
	}
}

// skipJSONValue returns the index after the value starting at b[i].
func skipJSONValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			i = skipJSONString(b, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

// structuredData is a structured event's data as it came: its data and
// data_base64 members.
type structuredData struct {
	data, base64       json.RawMessage
	hasData, hasBase64 bool
}

// readMembers reads a structured event's attributes into ev (null ones
// are absent) and returns its specversion and its data, undecoded.
func readMembers(members map[string]json.RawMessage, ev *inEvent) (sv string, d structuredData, err error) {
	for name, raw := range members {
		if string(raw) == "null" && name != "data" {
			continue
		}
		switch name {
		case "data":
			d.data, d.hasData = raw, true
			continue
		case "data_base64":
			d.base64, d.hasBase64 = raw, true
			continue
		}
		if !ValidAttributeName(name) {
			return "", d, badRequest("member " + strconv.Quote(name) + ": CloudEvents attribute names MUST be lower-case letters and digits")
		}
		var dst *string
		switch name {
		case "specversion":
			dst = &sv
		case "id":
			dst = &ev.id
		case "source":
			dst = &ev.source
		case "type":
			dst = &ev.typ
		case "subject":
			dst = &ev.subject
		case "time":
			dst = &ev.time
		case "dataschema":
			dst = &ev.dataschema
		case "datacontenttype":
			dst = &ev.contentTyp
		}
		if dst != nil {
			if err := jsonString(raw, dst); err != nil {
				return "", d, badRequest(name + ": " + err.Error())
			}
			continue
		}
		v, err := extensionValue(raw)
		if err != nil {
			return "", d, badRequest("extension " + name + ": " + err.Error())
		}
		ev.ext = append(ev.ext, extension{name, v})
	}
	return sv, d, nil
}

// decode sets ev's data from d: data_base64 decoded, or data as the JSON
// value it is when datacontenttype declares JSON or is absent, else as
// the content of a JSON string.
func (d structuredData) decode(ev *inEvent) error {
	switch {
	case d.hasData && d.hasBase64:
		return badRequest("data and data_base64: MUST NOT both be present (JSON format §3.1.1)")
	case d.hasBase64:
		var s string
		if err := json.Unmarshal(d.base64, &s); err != nil {
			return badRequest("data_base64: want a JSON string")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return badRequest("data_base64: not base64: " + err.Error())
		}
		ev.data = b
	case d.hasData:
		if ev.contentTyp == "" {
			ev.contentTyp = ctJSON // JSON format §3.1.2
		}
		if declaresJSON(ev.contentTyp) {
			ev.data = d.data
			break
		}
		var s string
		if err := json.Unmarshal(d.data, &s); err != nil {
			return badRequest("data: datacontenttype " + strconv.Quote(ev.contentTyp) + " is not JSON, so data must be a JSON string")
		}
		ev.data = []byte(s)
	}
	return nil
}

// declaresJSON tells whether a datacontenttype declares JSON-formatted data
// (JSON format §3.1.1): */json or */*+json.
func declaresJSON(ct string) bool {
	mt := mediaType(ct)
	_, sub, _ := strings.Cut(mt, "/")
	return sub == "json" || strings.HasSuffix(sub, "+json")
}

// jsonString decodes raw, which must be a JSON string and a CloudEvents
// String, into dst.
func jsonString(raw json.RawMessage, dst *string) error {
	if len(raw) < 2 || raw[0] != '"' {
		return errors.New("want a JSON string")
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		// No escapes: the bytes between the quotes are the string (the
		// document passed json.Valid).
		*dst = string(raw[1 : len(raw)-1])
	} else if err := json.Unmarshal(raw, dst); err != nil {
		return err
	}
	return checkString(*dst)
}

// extensionValue renders an extension's JSON value as its canonical string
// (JSON format §2.2): a string, a boolean, or an Integer.
func extensionValue(raw json.RawMessage) (string, error) {
	switch c := raw[0]; {
	case c == '"':
		var s string
		err := jsonString(raw, &s)
		return s, err
	case c == 't' || c == 'f':
		return string(raw), nil
	case c == '-' || ('0' <= c && c <= '9'):
		n, err := strconv.ParseInt(string(raw), 10, 32)
		if err != nil {
			return "", errors.New("a number must be an Integer: no fraction or exponent, from -2147483648 to 2147483647")
		}
		return strconv.FormatInt(n, 10), nil
	}
	return "", errors.New("objects and arrays have no CloudEvents type")
}

// ValidAttributeName reports whether s is a valid CloudEvents attribute or
// extension name: [a-z0-9]+ (core specification, "Attribute Naming
// Convention").
func ValidAttributeName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// env returns the CE_* variables of ev, and TRACEPARENT and TRACESTATE
// from tc. All values live in one string, so building them costs two
// allocations whatever the number of attributes.
//
// Long on purpose: a pass that sizes the string and a pass that writes
// it, which must visit the same variables in the same order, side by side.
func (ev *inEvent) env(tc traceContext) []string {
	const sv = "CE_SPECVERSION=" + specVersion
	opt := [...]struct{ key, val string }{
		{"CE_ID=", ev.id},
		{"CE_SOURCE=", ev.source},
		{"CE_TYPE=", ev.typ},
		{"CE_SUBJECT=", ev.subject},
		{"CE_TIME=", ev.time},
		{"CE_DATASCHEMA=", ev.dataschema},
		{"CE_DATACONTENTTYPE=", ev.contentTyp},
	}
	n, count := len(sv), 1
	for i, o := range opt {
		if o.val != "" || i < 3 {
			n += len(o.key) + len(o.val)
			count++
		}
	}
	for _, x := range ev.ext {
		n += len("CE_=") + len(x.name) + len(x.value)
		count++
	}
	trace := [...]struct{ key, val string }{{"TRACEPARENT=", tc.parent}, {"TRACESTATE=", tc.state}}
	for _, o := range trace {
		if o.val != "" {
			n += len(o.key) + len(o.val)
			count++
		}
	}
	var b strings.Builder
	b.Grow(n)
	var endsBuf [16]int
	ends := endsBuf[:0]
	b.WriteString(sv)
	ends = append(ends, b.Len())
	for i, o := range opt {
		if o.val != "" || i < 3 {
			b.WriteString(o.key)
			b.WriteString(o.val)
			ends = append(ends, b.Len())
		}
	}
	for _, x := range ev.ext {
		b.WriteString("CE_")
		for i := 0; i < len(x.name); i++ {
			c := x.name[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b.WriteByte(c)
		}
		b.WriteByte('=')
		b.WriteString(x.value)
		ends = append(ends, b.Len())
	}
	for _, o := range trace {
		if o.val != "" {
			b.WriteString(o.key)
			b.WriteString(o.val)
			ends = append(ends, b.Len())
		}
	}
	s := b.String()
	env := make([]string, count)
	start := 0
	for i, end := range ends {
		env[i] = s[start:end]
		start = end
	}
	return env
}
