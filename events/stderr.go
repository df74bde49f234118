package events

import (
	"bytes"
	"io"
	"sync"
	"unicode/utf8"
)

// maxLine bounds the part of a line held back while waiting for its
// newline: a longer line is written in pieces, each prefixed.
const maxLine = 16 << 10

// flushAt is how many bytes of whole lines a lineWriter gathers before it
// writes them: what a guest writes at once, up to its whole memory, costs
// the host that much and a line, not a copy of it with every line
// prefixed.
const flushAt = 2 * maxLine

// sink serialises writes to the task's stderr. Every Write it does holds
// whole lines only, so lines of concurrent invocations never interleave.
type sink struct {
	mu   sync.Mutex
	w    io.Writer
	pool sync.Pool // *lineWriter
}

func (s *sink) write(p []byte) {
	s.mu.Lock()
	_, _ = s.w.Write(p) // the guest is not to fail because logging does
	s.mu.Unlock()
}

// lines writes msg, every line of it prefixed with "[id] ".
func (s *sink) lines(id, msg string) {
	lw := s.get(id)
	_, _ = io.WriteString(lw, msg+"\n")
	s.put(lw)
}

// maxPrefixID bounds the event id in the prefix of its guest's lines: a
// client chooses the id, up to the headers' 64 KiB, and a guest writing
// short lines would have each cost that much of the task's log.
const maxPrefixID = 128

// get returns a lineWriter prefixing lines with "[id] ", an id over
// maxPrefixID bytes cut at a character boundary and followed by "…".
func (s *sink) get(id string) *lineWriter {
	lw, _ := s.pool.Get().(*lineWriter)
	if lw == nil {
		lw = &lineWriter{s: s}
	}
	lw.prefix = append(lw.prefix[:0], '[')
	if len(id) > maxPrefixID {
		cut := maxPrefixID
		for cut > 0 && !utf8.RuneStart(id[cut]) {
			cut--
		}
		lw.prefix = append(append(lw.prefix, id[:cut]...), "…"...)
	} else {
		lw.prefix = append(lw.prefix, id...)
	}
	lw.prefix = append(lw.prefix, "] "...)
	return lw
}

// put flushes lw's last, unterminated line and recycles it. The invoker has
// returned, so nothing writes to lw any more.
func (s *sink) put(lw *lineWriter) {
	lw.mu.Lock()
	if len(lw.pending) > 0 {
		lw.out = append(append(append(lw.out[:0], lw.prefix...), lw.pending...), '\n')
		s.write(lw.out)
		lw.pending = lw.pending[:0]
	}
	lw.mu.Unlock()
	if cap(lw.out) > 4*maxLine || cap(lw.pending) > 4*maxLine {
		return
	}
	s.pool.Put(lw)
}

// lineWriter is one invocation's stderr: it prefixes every line and hands
// complete lines to the sink.
type lineWriter struct {
	s       *sink
	mu      sync.Mutex // an invoker may write from several goroutines
	prefix  []byte
	pending []byte // start of a line whose newline has not come yet
	out     []byte
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	out := lw.out[:0]
	for len(p) > 0 {
		// A line ends within maxLine bytes, or is cut there; len(lw.pending)
		// is always below maxLine.
		i := bytes.IndexByte(p[:min(len(p), maxLine-len(lw.pending)+1)], '\n')
		if i < 0 {
			if len(lw.pending)+len(p) < maxLine {
				lw.pending = append(lw.pending, p...)
				break
			}
			// Too long to hold: emit what we have as a line of its own.
			take := maxLine - len(lw.pending)
			out = append(append(append(out, lw.prefix...), lw.pending...), p[:take]...)
			out = append(out, '\n')
			lw.pending, p = lw.pending[:0], p[take:]
		} else {
			out = append(append(append(out, lw.prefix...), lw.pending...), p[:i+1]...)
			lw.pending, p = lw.pending[:0], p[i+1:]
		}
		if len(out) >= flushAt {
			lw.s.write(out)
			out = out[:0]
		}
	}
	if len(out) > 0 {
		lw.s.write(out)
	}
	lw.out = out
	return n, nil
}
