package events

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
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
)

// classify finds a request's mode from its headers alone (CloudEvents HTTP
// binding §3, as sdk-go's cehttp.NewMessage does), before reading the body.
func classify(h http.Header) (mode, error) {
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

// parseBinary reads a binary-mode event from its headers, with sdk-go's
// semantics (cehttp.Message.ReadBinary + binding.ToEvent + Validate): one
// header per attribute, the first value wins, values are taken as they are
// (no percent-decoding, no unquoting), ce-<name> is extension <name>
// lower-cased, and Content-Type is datacontenttype. body becomes the data.
func (p *parser) parseBinary(h http.Header, body []byte, ev *inEvent) error {
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch k {
		case "Ce-Specversion": // checked by classify
		case "Ce-Id":
			ev.id = v
		case "Ce-Source":
			ev.source = v
		case "Ce-Type":
			ev.typ = v
		case "Ce-Subject":
			ev.subject = strings.TrimSpace(v)
		case "Ce-Time":
			if v == "" { // present but empty: sdk-go rejects it
				return errBadTime
			}
			ev.time = v
		case "Ce-Dataschema":
			if v == "" {
				return errBadSchema
			}
			ev.dataschema = v
		case "Content-Type":
			ev.contentTyp = strings.TrimSpace(v)
		default:
			if !strings.HasPrefix(k, "Ce-") {
				continue
			}
			// A bare "Ce-" header is an empty name: invalid (sdk-go v2.16.2
			// panics on it).
			name := k[3:]
			if !validExtName(name) {
				return badRequest("invalid CloudEvents extension name in header " + k + ": MUST be [a-z0-9]")
			}
			if strings.EqualFold(name, "datacontenttype") {
				return errDataContentTyp
			}
			// The name keeps its header spelling (sdk-go lower-cases it):
			// CE_<NAME> is all the function sees of it.
			ev.ext = append(ev.ext, extension{name, v})
		}
	}
	if ev.time != "" {
		t, err := time.Parse(time.RFC3339Nano, ev.time)
		if err != nil {
			return errBadTime
		}
		ev.time = types.FormatTime(t)
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

// parseStructured reads a structured-mode (JSON format) event with sdk-go's
// event model. The body is checked with encoding/json first: sdk-go's
// jsoniter decoder accepts some malformed documents.
func (p *parser) parseStructured(body []byte, ev *inEvent) error {
	if !json.Valid(body) {
		return errMalformedJSON
	}
	var e event.Event
	if err := e.UnmarshalJSON(body); err != nil {
		if strings.HasPrefix(err.Error(), "unexpected data payload for media type") {
			if ok, ferr := p.parseJSONSuffixData(body, ev); ok {
				return ferr
			}
		}
		var verr event.ValidationError
		if errors.As(err, &verr) {
			if _, ok := verr["specversion"]; ok && e.Context == nil {
				if strings.Contains(verr.Error(), "unknown value") {
					return errSpecVersion
				}
			}
		}
		return badRequest("malformed CloudEvent: " + err.Error())
	}
	if e.SpecVersion() != specVersion {
		return errSpecVersion
	}
	if err := e.Validate(); err != nil {
		return badRequest(err.Error())
	}
	ctx := e.Context.(*event.EventContextV1)
	ev.id = ctx.ID
	ev.source = ctx.Source.String()
	ev.typ = ctx.Type
	if ctx.Subject != nil {
		ev.subject = *ctx.Subject
	}
	if ctx.Time != nil {
		ev.time = ctx.Time.String()
	}
	if ctx.DataSchema != nil {
		ev.dataschema = ctx.DataSchema.String()
	}
	if ctx.DataContentType != nil {
		ev.contentTyp = *ctx.DataContentType
	}
	if err := p.validate(ev); err != nil {
		return err
	}
	for name, v := range ctx.Extensions {
		s, err := types.Format(v)
		if err != nil {
			return badRequest("extension " + name + ": " + err.Error())
		}
		ev.ext = append(ev.ext, extension{name, s})
	}
	ev.data = e.DataEncoded
	return nil
}

// parseJSONSuffixData handles what sdk-go v2.16.2 gets wrong: a
// datacontenttype like "application/vnd.api+json" makes `data` a JSON value
// (JSON format §3.1), but sdk-go only knows application/json and text/json
// and wants a string. ok is false when that is not the problem.
func (p *parser) parseJSONSuffixData(body []byte, ev *inEvent) (ok bool, err error) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return false, nil
	}
	data, hasData := m["data"]
	var ct string
	if !hasData || json.Unmarshal(m["datacontenttype"], &ct) != nil || !strings.HasSuffix(mediaType(ct), "+json") {
		return false, nil
	}
	delete(m, "data")
	attrs, err := json.Marshal(m)
	if err != nil {
		return false, nil
	}
	if err := p.parseStructured(attrs, ev); err != nil {
		return true, err
	}
	ev.data = data
	return true, nil
}

// env returns the CE_* variables of ev. All values live in one string, so
// building them costs two allocations whatever the number of attributes.
func (ev *inEvent) env() []string {
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
	s := b.String()
	env := make([]string, count)
	start := 0
	for i, end := range ends {
		env[i] = s[start:end]
		start = end
	}
	return env
}
