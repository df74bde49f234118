package events

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// countingWriter counts what it is given, and the largest single write.
type countingWriter struct {
	n, largest int
	lines      int
	bad        int // lines without the prefix
	prefix     []byte
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	w.largest = max(w.largest, len(p))
	for line := range bytes.Lines(p) {
		w.lines++
		if !bytes.HasPrefix(line, w.prefix) {
			w.bad++
		}
	}
	return len(p), nil
}

// A guest's stderr costs the host a bounded buffer whatever it writes at
// once: one fd_write of many short lines (here 64 Ki newlines, under an
// event id of 1 KiB) is written in pieces, every line still prefixed, and
// a long line in one write is cut at maxLine as one over several writes
// is. Both used to be gathered into one buffer: lines × (prefix + line),
// here 64 MiB, with a guest's whole memory of newlines gigabytes; a long
// line whole.
func TestStderrBounded(t *testing.T) {
	id := strings.Repeat("i", 1<<10)
	w := &countingWriter{prefix: []byte("[" + id[:maxPrefixID] + "…] ")}
	s := &sink{w: w}
	lw := s.get(id)
	const lines = 64 << 10
	if n, err := lw.Write(bytes.Repeat([]byte{'\n'}, lines)); n != lines || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if _, err := lw.Write(append(bytes.Repeat([]byte{'x'}, 5*maxLine), "\ny\n"...)); err != nil {
		t.Fatal(err)
	}
	if c := cap(lw.out); c > 4*maxLine+8<<10 {
		t.Errorf("the line writer holds a buffer of %d bytes", c)
	}
	s.put(lw)
	if w.largest > 4*maxLine+8<<10 {
		t.Errorf("the largest write to stderr was %d bytes", w.largest)
	}
	if want := lines + 4 + 1 + 1; w.lines != want || w.bad != 0 {
		t.Errorf("%d lines, %d without the prefix; want %d, all prefixed", w.lines, w.bad, want)
	}
}

// An event's id prefixes each line its guest writes to stderr, and a
// client chooses the id: up to the 64 KiB of headers. Cut to 128 bytes,
// it cannot multiply a guest's lines by 64 KiB each in the task's log.
func TestStderrPrefixBounded(t *testing.T) {
	id := strings.Repeat("é", 32<<10) // 64 KiB, two bytes a rune
	w := &countingWriter{prefix: []byte("[")}
	s := &sink{w: w}
	lw := s.get(id)
	if _, err := lw.Write(bytes.Repeat([]byte("x\n"), 1000)); err != nil {
		t.Fatal(err)
	}
	s.put(lw)
	if w.lines != 1000 || w.n > 1000*(maxPrefixID+16) {
		t.Errorf("1000 short lines took %d bytes in %d lines", w.n, w.lines)
	}
	if got := string(lw.prefix); !utf8.ValidString(got) || !strings.HasSuffix(got, "…] ") {
		t.Errorf("prefix of %d bytes, want valid UTF-8 ending in an ellipsis", len(got))
	}
	if lw := s.get("short-id"); string(lw.prefix) != "[short-id] " {
		t.Errorf("prefix %q", lw.prefix)
	}
}
