package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress shows how far a study is: on a terminal a bar that redraws
// itself in place, elsewhere one line per round.
type progress struct {
	w                io.Writer
	tty              bool
	rounds, perRound int
	warm             int // warm-up rounds
	total, n         int // calls in all, and begun
	start, drawn     time.Time
	lastRound        int
}

func newProgress(w io.Writer, tty bool, rounds, perRound, warm int) *progress {
	return &progress{w: w, tty: tty, rounds: rounds, perRound: perRound, warm: warm,
		total: rounds * perRound, start: time.Now(), lastRound: -1}
}

// step is called before each call: round r (0-based, warm-up first) of
// cell.
func (p *progress) step(r int, cell string) {
	if p == nil || p.w == nil {
		return
	}
	p.n++
	elapsed := time.Since(p.start)
	phase := "measuring"
	if r < p.warm {
		phase = "warm-up"
	}
	rounds := p.rounds
	if p.tty {
		now := time.Now()
		if now.Sub(p.drawn) < 100*time.Millisecond && p.n != 1 && p.n != p.total {
			return
		}
		p.drawn = now
		const width = 28
		done := (p.n - 1) * width / max(1, p.total)
		bar := strings.Repeat("=", done) + ">" + strings.Repeat(" ", max(0, width-done-1))
		fmt.Fprintf(p.w, "\r\x1b[K[%s] %3d%% %d/%d  round %d/%d %s  %-24s %s%s",
			bar, (p.n-1)*100/max(1, p.total), p.n-1, p.total, r+1, rounds, phase, cell,
			elapsed.Round(time.Second), p.eta(elapsed))
		return
	}
	if r != p.lastRound {
		p.lastRound = r
		fmt.Fprintf(p.w, "nebula bench: round %d/%d (%s), %d/%d calls done, %s elapsed%s\n",
			r+1, rounds, phase, p.n-1, p.total, elapsed.Round(time.Second), p.eta(elapsed))
	}
}

func (p *progress) eta(elapsed time.Duration) string {
	if p.n <= 1 {
		return ""
	}
	left := time.Duration(float64(elapsed) / float64(p.n-1) * float64(p.total-p.n+1))
	return fmt.Sprintf(", ~%s left", left.Round(time.Second))
}

// done ends the bar's line.
func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%d calls in %s\n", p.n, time.Since(p.start).Round(time.Second))
	}
}
