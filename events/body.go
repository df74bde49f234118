package events

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

var (
	errTooLarge   = errors.New("request body too large")
	errBodyBudget = errors.New("overloaded: too many request bodies in memory")
	errBodySlow   = errors.New("request body not received in time")
)

// bodyReader reads request bodies into memory, growing each buffer as bytes
// arrive (never to a length the client merely declared) up to the max body,
// and keeping the bytes buffered by all requests within a budget, which
// the replies being written share (hold).
type bodyReader struct {
	max     int64
	budget  int64
	used    atomic.Int64
	timeout time.Duration
}

// read reads r's body into *bp. It returns the body and the bytes it
// reserved from the budget, to give back with unreserve once the body is no
// longer needed (even on error). The body must arrive within the body
// timeout: the connection's read deadline is set for it and cleared after.
func (br *bodyReader) read(w http.ResponseWriter, r *http.Request, bp *[]byte) (body []byte, reserved int64, err error) {
	if d := readDeadliner(w); d != nil && d.SetReadDeadline(time.Now().Add(br.timeout)) == nil {
		defer d.SetReadDeadline(time.Time{}) // the invocation may take longer
	}
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			grow := min(max(int64(cap(b)), 4096), br.max+1-int64(cap(b)))
			if grow <= 0 {
				return nil, reserved, errTooLarge
			}
			if br.used.Add(grow) > br.budget {
				br.used.Add(-grow)
				return nil, reserved, errBodyBudget
			}
			reserved += grow
			nb := make([]byte, len(b), int64(cap(b))+grow)
			copy(nb, b)
			b = nb
		}
		n, rerr := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > br.max {
			return nil, reserved, errTooLarge
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				return nil, reserved, errBodySlow
			}
			var mbe *http.MaxBytesError
			if errors.As(rerr, &mbe) {
				return nil, reserved, errTooLarge
			}
			return nil, reserved, rerr
		}
	}
	if cap(b) <= 1<<20 { // keep small buffers only
		*bp = b
	}
	return b, reserved, nil
}

type deadliner interface{ SetReadDeadline(time.Time) error }

// readDeadliner returns what sets w's read deadline: w itself (net/http's
// HTTP/1 and HTTP/2 response writers), else an http.ResponseController
// when w wraps another writer; nil for writers without one (tests).
func readDeadliner(w http.ResponseWriter) deadliner {
	if d, ok := w.(deadliner); ok {
		return d
	}
	if _, ok := w.(interface{ Unwrap() http.ResponseWriter }); ok {
		return http.NewResponseController(w)
	}
	return nil
}

// hold reserves the n bytes of a reply from the budget until it has been
// written, whether or not they fit: replies are what the guests already
// wrote. It returns what to unreserve.
func (br *bodyReader) hold(n int) int64 {
	br.used.Add(int64(n))
	return int64(n)
}

// spent reports whether the budget is overspent: bodies alone never
// take more than it, replies may (hold).
func (br *bodyReader) spent() bool { return br.used.Load() > br.budget }

func (br *bodyReader) unreserve(n int64) {
	if n != 0 {
		br.used.Add(-n)
	}
}
