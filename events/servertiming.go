package events

import (
	"fmt"
	"strconv"
	"strings"
)

// The metrics of the Server-Timing header the front door writes on every
// response, in this order, each with its duration in milliseconds:
//
//	Server-Timing: queue;dur=0.000, start;dur=0.031, exec;dur=0.118, total;dur=0.170
const (
	TimingQueue = "queue" // waiting for a slot
	TimingStart = "start" // instantiating the module or spawning the process
	TimingExec  = "exec"  // the guest's run
	TimingTotal = "total" // request received to response written
)

// ServerTimingMetric is one metric of a W3C Server-Timing header value.
type ServerTimingMetric struct {
	Name   string
	Millis float64 // its dur parameter; 0 when it has none
}

// ParseServerTiming returns the metrics of a W3C Server-Timing header value
// in order. A dur that is not a non-negative number is an error; the
// metrics are returned all the same, that one with Millis 0, for callers
// that only display them.
func ParseServerTiming(h string) ([]ServerTimingMetric, error) {
	var metrics []ServerTimingMetric
	var bad error
	for m := range strings.SplitSeq(h, ",") {
		params := strings.Split(m, ";")
		name := strings.TrimSpace(params[0])
		if name == "" {
			continue
		}
		metric := ServerTimingMetric{Name: name}
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(p, "=")
			if !strings.EqualFold(strings.TrimSpace(k), "dur") {
				continue
			}
			ms, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(v), `"`), 64)
			if err != nil || ms < 0 {
				if bad == nil {
					bad = fmt.Errorf("Server-Timing %q: bad dur of %s", h, name)
				}
				continue
			}
			metric.Millis = ms
		}
		metrics = append(metrics, metric)
	}
	return metrics, bad
}
