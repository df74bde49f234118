package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
)

// sdkParse is the reference: what sdk-go's receiver makes of a request.
func sdkParse(h http.Header, body []byte) (_ *inEvent, err error) {
	defer func() {
		if r := recover(); r != nil { // sdk-go v2.16.2 panics on a bare "Ce-" header
			err = fmt.Errorf("sdk-go panicked: %v", r)
		}
	}()
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	ev := &inEvent{id: e.ID(), source: e.Source(), typ: e.Type(), subject: e.Subject(),
		dataschema: e.DataSchema(), contentTyp: e.DataContentType(), data: e.Data()}
	if !e.Time().IsZero() {
		ev.time = types.FormatTime(e.Time())
	}
	for k, v := range e.Extensions() {
		s, _ := types.Format(v)
		ev.ext = append(ev.ext, extension{k, s})
	}
	return ev, nil
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1]) // canonicalises, as net/http does
	}
	return h
}

func sortExt(ev *inEvent) {
	slices.SortFunc(ev.ext, func(a, b extension) int { return strings.Compare(a.name, b.name) })
}

// binaryCases are headers (beyond ce-specversion: 1.0) the fast binary
// parser must judge exactly as sdk-go does.
var binaryCases = []struct {
	name string
	kv   []string
	ok   bool
}{
	{"minimal", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t"}, true},
	{"all attributes", []string{"ce-id", "1", "ce-source", "https://example.com/a?b=c", "ce-type", "com.example.t",
		"ce-subject", "sub", "ce-time", "2024-05-06T07:08:09.123456789+02:00", "ce-dataschema", "https://example.com/schema",
		"content-type", "application/json; charset=utf-8"}, true},
	{"extensions", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-traceparent", "00-ab-cd-01", "ce-MyExt", "V a l", "ce-n1", ""}, true},
	{"urn source", []string{"ce-id", "1", "ce-source", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "ce-type", "t"}, true},
	{"blank subject", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-subject", " "}, true},
	{"missing id", []string{"ce-source", "/s", "ce-type", "t"}, false},
	{"blank id", []string{"ce-id", " ", "ce-source", "/s", "ce-type", "t"}, false},
	{"missing source", []string{"ce-id", "1", "ce-type", "t"}, false},
	{"bad source", []string{"ce-id", "1", "ce-source", "http://a b:x/", "ce-type", "t"}, false},
	{"bad source escape", []string{"ce-id", "1", "ce-source", "http://h/%zz", "ce-type", "t"}, false},
	{"missing type", []string{"ce-id", "1", "ce-source", "/s"}, false},
	{"bad time", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-time", "yesterday"}, false},
	{"relative dataschema", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-dataschema", "/schema"}, false},
	{"bad content type", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "content-type", "text/"}, false},
	{"bad extension name", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-BadExt_Name", "v"}, false},
	{"dashed extension name", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-my-ext", "v"}, false},
	{"bare ce- header", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-", "v"}, false},
	{"ce-datacontenttype", []string{"ce-id", "1", "ce-source", "/s", "ce-type", "t", "ce-datacontenttype", "text/plain"}, false},
}

func TestBinaryMatchesSDK(t *testing.T) {
	var p parser
	for _, tc := range binaryCases {
		t.Run(tc.name, func(t *testing.T) {
			h := header(append([]string{"ce-specversion", "1.0"}, tc.kv...)...)
			body := []byte(`{"k":"v"}`)
			want, sdkErr := sdkParse(h, body)
			var got inEvent
			err := p.parseBinary(h, body, &got)
			if (err == nil) != (sdkErr == nil) || (err == nil) != tc.ok {
				t.Fatalf("ours: %v; sdk-go: %v; want ok=%v", err, sdkErr, tc.ok)
			}
			if err != nil {
				if es, isStatus := err.(*errStatus); !isStatus || es.code != http.StatusBadRequest {
					t.Fatalf("error %v is not a 400", err)
				}
				return
			}
			for i := range got.ext {
				got.ext[i].name = strings.ToLower(got.ext[i].name)
			}
			sortExt(&got)
			sortExt(want)
			if got.id != want.id || got.source != want.source || got.typ != want.typ || got.subject != want.subject ||
				got.time != want.time || got.dataschema != want.dataschema || got.contentTyp != want.contentTyp ||
				!slices.Equal(got.ext, want.ext) || !bytes.Equal(got.data, want.data) {
				t.Fatalf("ours:\n%+v\nsdk-go:\n%+v", got, *want)
			}
		})
	}
}

func FuzzBinaryMatchesSDK(f *testing.F) {
	for _, tc := range binaryCases {
		f.Add(strings.Join(tc.kv, "\n"))
	}
	var p parser
	f.Fuzz(func(t *testing.T, kvs string) {
		kv := strings.Split(kvs, "\n")
		if len(kv)%2 != 0 {
			return
		}
		h := http.Header{"Ce-Specversion": {"1.0"}}
		for i := 0; i < len(kv); i += 2 {
			k := textproto.CanonicalMIMEHeaderKey(kv[i])
			if k == "" || k == "Ce-Specversion" {
				return
			}
			h[k] = append(h[k], strings.TrimSpace(kv[i+1]))
		}
		// sdk-go neither unquotes nor percent-decodes (HTTP binding
		// §3.1.3.2): it is the reference for the decoded values.
		dec := h.Clone()
		for k, vs := range dec {
			if k == "Ce-Specversion" || !strings.HasPrefix(k, "Ce-") {
				continue
			}
			v := vs[0]
			if k == "Ce-Subject" {
				v = strings.TrimSpace(v)
			}
			d, err := refDecode(v)
			if err != nil {
				return // TestHeaderValueDecoding's subject
			}
			dec[k] = []string{d}
		}
		_, sdkErr := sdkParse(dec, nil)
		var got inEvent
		err := p.parseBinary(h, nil, &got)
		if (err == nil) != (sdkErr == nil) {
			t.Fatalf("headers %q: ours: %v; sdk-go: %v", h, err, sdkErr)
		}
	})
}

// refDecode is the reference decoder of ce-* header values (HTTP binding
// §3.1.3.2): strconv's unquoting stands in for RFC 7230's quoted-string,
// url.PathUnescape for percent-decoding; the result must be a CloudEvents
// String (valid UTF-8, no control characters).
func refDecode(v string) (string, error) {
	if strings.HasPrefix(v, `"`) {
		if strings.ContainsAny(v, "\\\n\r\t") {
			return "", errors.New("escapes: not the reference's business")
		}
		u, err := strconv.Unquote(v)
		if err != nil {
			return "", err
		}
		v = u
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(d) || strings.IndexFunc(d, func(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }) >= 0 {
		return "", errors.New("not a CloudEvents String")
	}
	return d, nil
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		kv   []string
		mode mode
		code int
	}{
		{[]string{"ce-specversion", "1.0"}, modeBinary, 0},
		{[]string{"ce-specversion", "1.0", "content-type", "application/cloudevents+avro"}, modeBinary, 0},
		{[]string{"content-type", "application/cloudevents+json"}, modeStructured, 0},
		{[]string{"content-type", "Application/CloudEvents+JSON; charset=utf-8", "ce-specversion", "1.0"}, modeStructured, 0},
		{[]string{"content-type", "application/cloudevents-batch+json"}, 0, 415},
		{[]string{"content-type", "application/cloudevents-batch+json", "ce-specversion", "1.0"}, 0, 415},
		{[]string{"content-type", "application/cloudevents+avro"}, 0, 415},
		{[]string{"content-type", "application/json"}, 0, 415},
		{nil, 0, 415},
		{[]string{"ce-specversion", "0.3"}, 0, 415},
		{[]string{"ce-specversion", "2.0"}, 0, 415},
	} {
		m, err := contentMode(header(tc.kv...))
		code := 0
		if err != nil {
			code = err.(*errStatus).code
		}
		if m != tc.mode || code != tc.code {
			t.Errorf("%q: mode %v code %d, want %v %d", tc.kv, m, code, tc.mode, tc.code)
		}
	}
}

func TestEnv(t *testing.T) {
	ev := inEvent{id: "1", source: "/s", typ: "t", time: "2024-01-02T03:04:05Z", contentTyp: "text/plain",
		ext: []extension{{"traceparent", "00-x"}, {"myext", "v=w"}}}
	got := ev.env(traceContext{})
	want := []string{"CE_SPECVERSION=1.0", "CE_ID=1", "CE_SOURCE=/s", "CE_TYPE=t", "CE_TIME=2024-01-02T03:04:05Z",
		"CE_DATACONTENTTYPE=text/plain", "CE_TRACEPARENT=00-x", "CE_MYEXT=v=w"}
	if !slices.Equal(got, want) {
		t.Fatalf("env\n%q\nwant\n%q", got, want)
	}
}

func TestAppendJSONString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        `"plain"`,
		"q\"b\\s/":     `"q\"b\\s/"`,
		"nl\n\r\t\x01": `"nl\n\r\t\u0001"`,
		"€ \u2028":     `"€ \u2028"`,
		"bad\xffutf8":  `"bad\ufffdutf8"`,
		"":             `""`,
	} {
		if got := string(appendJSONString(nil, in)); got != want {
			t.Errorf("appendJSONString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestAttributeBytes(t *testing.T) {
	for body, want := range map[string]int{
		`{}`:                                0,
		` { } `:                             0,
		`[1,2]`:                             0,
		`{"a":1}`:                           4,
		`{ "a" : 1 , "bb" : "x\"y" }`:       3 + 1 + 4 + 6,
		`{"data":{"a":[1,"}]"]},"id":"\\"}`: 4 + 4,
		`{"data_base64":"AAAA","x":[{"y":null}]}`: 3 + 12,
		`{"x":true,"data":"q","y":-1.5e3}`:        3 + 4 + 3 + 6,
		`{"x":"\\\\","z":"\\\""}`:                 3 + 6 + 3 + 6,
	} {
		if !json.Valid([]byte(body)) {
			t.Fatalf("%s: not valid JSON", body)
		}
		if got := attributeBytes([]byte(body)); got != want {
			t.Errorf("%s: %d, want %d", body, got, want)
		}
	}
}
