package events

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
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

// reply answers 200 with a reply event in the request's mode.
func (s *Server) reply(w http.ResponseWriter, md mode, ev *inEvent, out []byte, c *call) int {
	ct := s.replyCT
	if ct == "" {
		ct = detectContentType(out)
	}
	typ := s.replyType
	if typ == "" {
		typ = ev.typ + ".reply"
	}
	id := newUUID()
	var idBuf [36]byte
	encodeUUID(idBuf[:], id)
	now := time.Now()
	h := w.Header()
	s.setTrace(h, c)
	if md == modeStructured {
		bp := s.getBuf()
		defer s.bufs.Put(bp)
		b := appendStructured((*bp)[:0], unsafe36(&idBuf), s.replySource, typ, now, ct, out)
		defer s.bodies.unreserve(s.bodies.hold(len(b)))
		if cap(b) <= 1<<20 { // keep small buffers only
			*bp = b
		}
		vals := make([]string, 3)
		vals[0], vals[1], vals[2] = ceJSON[0], strconv.Itoa(len(b)), c.serverTiming()
		h["Content-Type"] = vals[0:1:1]
		h["Content-Length"] = vals[1:2:2]
		h["Server-Timing"] = vals[2:3:3]
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return http.StatusOK
	}
	// One allocation holds every generated value.
	var sb [256]byte
	b := append(sb[:0], idBuf[:]...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	timeEnd := len(b)
	b = strconv.AppendInt(b, int64(len(out)), 10)
	lenEnd := len(b)
	b = c.appendServerTiming(b)
	all := string(b)
	vals := make([]string, 8)
	vals[0] = specVersion
	vals[1] = all[:36]
	vals[2] = s.replySourceHdr
	vals[3] = encodeHeaderValue(typ)
	vals[4] = all[36:timeEnd]
	vals[5] = ct
	vals[6] = all[timeEnd:lenEnd]
	vals[7] = all[lenEnd:]
	h["Ce-Specversion"] = vals[0:1:1]
	h["Ce-Id"] = vals[1:2:2]
	h["Ce-Source"] = vals[2:3:3]
	h["Ce-Type"] = vals[3:4:4]
	h["Ce-Time"] = vals[4:5:5]
	h["Content-Type"] = vals[5:6:6]
	h["Content-Length"] = vals[6:7:7]
	h["Server-Timing"] = vals[7:8:8]
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return http.StatusOK
}

// replyPlain answers a plain HTTP invocation with the guest's stdout, a
// CGI response or a bare body (parseCGIResponse).
func (s *Server) replyPlain(w http.ResponseWriter, id string, out []byte, c *call) int {
	resp, reason, ok := parseCGIResponse(out)
	if !ok {
		if s.sink != nil {
			s.sink.lines(id, "nebula: "+reason)
		}
		return s.fail(w, c, http.StatusInternalServerError, reason)
	}
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	if len(resp.body) > 0 && len(h["Content-Type"]) == 0 {
		h["Content-Type"] = []string{detectContentType(resp.body)}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(resp.body))}
	s.setTrace(h, c)
	h["Server-Timing"] = []string{c.serverTiming()}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
	return resp.status
}

// newUUID is a random (version 4) UUID.
func newUUID() uuid.UUID { return uuid.New() }

// encodeUUID writes u's canonical form to dst without allocating.
func encodeUUID(dst []byte, u uuid.UUID) {
	const x = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = x[c>>4], x[c&0xf]
		j += 2
	}
}

func unsafe36(b *[36]byte) string { return unsafeString(b[:]) }
