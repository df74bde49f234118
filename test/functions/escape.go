package functions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
)

// EscapeResult is one line of the escape suite's output (Escape): one
// attempt to leave the guest's world.
type EscapeResult struct {
	Route  string `json:"route"`
	Op     string `json:"op"`
	Path   string `json:"path"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Detail string `json:"detail,omitempty"`
}

// EscapeMinResults is the fewest result lines a complete run prints; a
// shorter report means the suite did not run every route.
const EscapeMinResults = 500

// CheckEscape parses the escape suite's stdout and returns one message per
// attempt whose outcome differs from what it wants, and a message if the
// report is incomplete (no final "done" line, or fewer lines than
// EscapeMinResults), with the number of attempts it read.
func CheckEscape(stdout []byte) (failures []string, attempts int) {
	done := false
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r EscapeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			failures = append(failures, fmt.Sprintf("not a result line: %q", sc.Text()))
			continue
		}
		if r.Route == "done" {
			done = true
			continue
		}
		attempts++
		if r.Got != r.Want {
			failures = append(failures, fmt.Sprintf("%s: %s %s: got %s, want %s %s", r.Route, r.Op, r.Path, r.Got, r.Want, r.Detail))
		}
	}
	if !done {
		failures = append(failures, fmt.Sprintf("no \"done\" line after %d attempts: the suite (or its host) died", attempts))
	} else if attempts < EscapeMinResults {
		failures = append(failures, fmt.Sprintf("only %d attempts reported, want at least %d", attempts, EscapeMinResults))
	}
	return failures, attempts
}
