package events

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter caps the open connections of a listener. At the cap a new
// connection takes the place of the connection idle the longest (between
// requests), else of the oldest one that has not finished sending its
// first request's headers, provided it has been so for evictAfter; when
// there is none, the new one is closed at once (RST), so the kernel's
// accept queue never fills and a client learns promptly. Connections
// serving a request are never evicted, nor a keep-alive connection between
// two requests of a busy client.
//
// golang.org/x/net/netutil.LimitListener blocks Accept at the cap instead:
// then idle keep-alive connections, which cost nothing to close, lock out
// every new client until IdleTimeout.
type connLimiter struct {
	net.Listener
	max    int
	closed prometheus.Counter // evicted or refused

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
}

func newConnLimiter(ln net.Listener, max int, closed prometheus.Counter) *connLimiter {
	return &connLimiter{Listener: ln, max: max, closed: closed, conns: make(map[*limitedConn]struct{}, max)}
}

// limitedConn is a connection counted by its limiter; state and since
// are guarded by the limiter's mutex.
type limitedConn struct {
	net.Conn
	l     *connLimiter
	state http.ConnState
	since time.Time
	once  sync.Once
	// stalled: a write missed its deadline (a reply the client did not
	// take, see Server.replyDeadline); Close then resets the connection.
	stalled atomic.Bool
}

func (c *limitedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.stalled.Store(true)
	}
	return n, err
}

// Close closes the connection; one whose reply stalled is reset (RST),
// which drops what the kernel still holds of the reply at once rather
// than keeping it for a client that does not read.
func (c *limitedConn) Close() error {
	if c.stalled.Load() {
		refuse(c.Conn)
		c.once.Do(func() { c.l.remove(c) })
		return nil
	}
	err := c.Conn.Close()
	c.once.Do(func() { c.l.remove(c) })
	return err
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &limitedConn{Conn: nc, l: l, state: http.StateNew, since: time.Now()}
		l.mu.Lock()
		var victim *limitedConn
		if len(l.conns) >= l.max {
			victim = l.victimLocked()
			if victim == nil {
				l.mu.Unlock()
				l.closed.Inc()
				refuse(nc)
				continue
			}
			delete(l.conns, victim)
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.closed.Inc()
			_ = victim.Conn.Close()
		}
		return c, nil
	}
}

// evictAfter is how long a connection must have been idle, or sending its
// first headers, before a new connection may take its place.
const evictAfter = time.Second

// victimLocked returns the connection to close for a new one, or nil.
func (l *connLimiter) victimLocked() *limitedConn {
	var idle, fresh *limitedConn
	old := time.Now().Add(-evictAfter)
	for c := range l.conns {
		if c.since.After(old) {
			continue
		}
		switch c.state {
		case http.StateIdle:
			if idle == nil || c.since.Before(idle.since) {
				idle = c
			}
		case http.StateNew:
			if fresh == nil || c.since.Before(fresh.since) {
				fresh = c
			}
		}
	}
	if idle != nil {
		return idle
	}
	return fresh
}

func (l *connLimiter) remove(c *limitedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// open returns the number of connections counted now.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// trackConnState is an http.Server's ConnState hook: it keeps the state of
// the connections of every connLimiter serving it.
func trackConnState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	l := c.l
	l.mu.Lock()
	if _, counted := l.conns[c]; counted {
		c.state, c.since = st, time.Now()
		if st == http.StateClosed || st == http.StateHijacked {
			delete(l.conns, c)
		}
	}
	l.mu.Unlock()
}

// refuse closes a connection with a reset rather than a FIN: the client
// sees the refusal on its first read or write, and no TIME_WAIT is left.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
