package events

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	errOverload   = errors.New("overloaded: all slots busy and the queue full")
	errQueueWait  = errors.New("overloaded: waited too long for a slot")
	errClientGone = errors.New("client went away")
)

// admission hands out the slots invocations run in, like Knative
// queue-proxy's breaker: at most cap(slots) run, at most maxPending are
// running or waiting, and a waiter gets a slot in arrival order (a
// channel's blocked senders are served first come, first served) or gives
// up after maxWait.
type admission struct {
	slots      chan struct{}
	pending    atomic.Int64 // running or waiting
	maxPending int64
	maxWait    time.Duration
	queued     prometheus.Gauge
}

func newAdmission(running, queue int, maxWait time.Duration, queued prometheus.Gauge) *admission {
	return &admission{
		slots:      make(chan struct{}, running),
		maxPending: int64(running + queue),
		maxWait:    maxWait,
		queued:     queued,
	}
}

// acquire takes a slot and returns how long it waited for it. It fails with
// errOverload when the queue is full, errQueueWait after maxWait and
// errClientGone when ctx is done first. Every successful acquire must be
// followed by one release.
func (a *admission) acquire(ctx context.Context) (time.Duration, error) {
	if a.pending.Add(1) > a.maxPending {
		a.pending.Add(-1)
		return 0, errOverload
	}
	select {
	case a.slots <- struct{}{}:
		return 0, nil
	default:
	}
	t := time.Now()
	a.queued.Inc()
	timer := time.NewTimer(a.maxWait)
	var err error
	select {
	case a.slots <- struct{}{}:
	case <-timer.C:
		err = errQueueWait
	case <-ctx.Done():
		err = errClientGone
	}
	timer.Stop()
	a.queued.Dec()
	if err != nil {
		a.pending.Add(-1)
	}
	return time.Since(t), err
}

// release gives a slot back.
func (a *admission) release() {
	<-a.slots
	a.pending.Add(-1)
}
