package events

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Detected reply content types.
const (
	ctJSON   = "application/json"
	ctText   = "text/plain; charset=utf-8"
	ctBinary = "application/octet-stream"
)

// detectContentType classifies a guest's stdout: valid JSON, other valid
// UTF-8, or bytes.
func detectContentType(b []byte) string {
	switch {
	case json.Valid(b):
		return ctJSON
	case utf8.Valid(b):
		return ctText
	default:
		return ctBinary
	}
}

// mediaType returns ct's media type, lower-cased, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// appendStructured appends the JSON format of a reply event (CloudEvents
// JSON format §3). Data goes in "data" as a JSON value when the content type
// is one sdk-go v2.16.2 decodes as JSON (application/json, text/json) and it
// is valid JSON; as a JSON string when it is valid UTF-8 and the type is not
// a JSON one; else base64 in "data_base64", which every receiver decodes to
// the same bytes.
func appendStructured(b []byte, id, source, typ string, t time.Time, ct string, data []byte) []byte {
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, source)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":`...)
	b = appendJSONString(b, ct)
	mt := mediaType(ct)
	switch {
	case (mt == "application/json" || mt == "text/json") && json.Valid(data):
		b = append(b, `,"data":`...)
		b = append(b, data...)
	case !strings.HasSuffix(mt, "json") && utf8.Valid(data):
		b = append(b, `,"data":`...)
		b = appendJSONString(b, unsafeString(data))
	default:
		b = append(b, `,"data_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, data)
		b = append(b, '"')
	}
	return append(b, '}')
}

// unsafeString views b as a string for the duration of a call that does not
// keep it.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

const hex = "0123456789abcdef"

// appendJSONString appends s as a JSON string, replacing invalid UTF-8 with
// U+FFFD as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendMillis appends d in milliseconds with three decimals (µs).
func appendMillis(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	us := int64((d + 500*time.Nanosecond) / time.Microsecond)
	b = strconv.AppendInt(b, us/1000, 10)
	f := us % 1000
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}
