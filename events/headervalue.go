package events

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// decodeHeaderValue turns a ce-* header value into the attribute's string,
// as the HTTP binding §3.1.3.2 requires of a receiver: a double-quoted
// value is unquoted first (RFC 7230 §3.2.6), then one round of
// percent-decoding is done (lower-case hex accepted, unneeded escapes
// accepted). The result must be a CloudEvents String (see checkString):
// an escape that decodes to invalid UTF-8 ("%C0%A0") or to a control
// character is rejected, as is a malformed escape ("%zz", a lone "%").
func decodeHeaderValue(v string) (string, error) {
	if len(v) > 0 && v[0] == '"' {
		u, ok := unquote(v)
		if !ok {
			return "", errHeaderQuote
		}
		v = u
	}
	if strings.IndexByte(v, '%') >= 0 {
		d, err := url.PathUnescape(v)
		if err != nil {
			return "", errHeaderEscape
		}
		v = d
	}
	if err := checkString(v); err != nil {
		return "", err
	}
	return v, nil
}

// unquote decodes an RFC 7230 §3.2.6 quoted-string: the whole value between
// double quotes, with backslash escaping the next character.
func unquote(v string) (string, bool) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", false
	}
	v = v[1 : len(v)-1]
	if strings.IndexByte(v, '\\') < 0 {
		return v, strings.IndexByte(v, '"') < 0
	}
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '"':
			return "", false
		case '\\':
			i++
			if i == len(v) {
				return "", false
			}
			c = v[i]
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// checkString enforces the CloudEvents String type (spec §Type System):
// valid UTF-8 without the control characters U+0000–U+001F and
// U+007F–U+009F. (Surrogates cannot occur in valid UTF-8.)
func checkString(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return errControlChar
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return errInvalidUTF8
		}
		if r >= 0x80 && r <= 0x9f {
			return errControlChar
		}
		i += size
	}
	return nil
}

// needsEncoding tells the bytes the HTTP binding §3.1.3.2 requires a sender
// to percent-encode: space, '"', '%' and everything outside U+0021–U+007E
// (every byte of a multi-byte UTF-8 sequence).
func needsEncoding(c byte) bool { return c <= ' ' || c == '"' || c == '%' || c >= 0x7f }

// encodeHeaderValue percent-encodes an attribute's string for a ce-*
// header (HTTP binding §3.1.3.2), upper-case hex. Values that need nothing
// are returned as they are, without allocating.
func encodeHeaderValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEncoding(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const upper = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEncoding(c) {
			b = append(b, '%', upper[c>>4], upper[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}
