package harness

import (
	"fmt"
	"os"
)

// ProgramT lets a program outside `go test` (make demo, make bench, make
// soak) drive the harness: Errorf marks it failed, Fatalf runs the
// cleanups and exits with status 1.
type ProgramT struct {
	name     string
	cleanups []func()
	failed   bool
}

var _ T = (*ProgramT)(nil)

// NewProgramT returns a ProgramT whose messages start with name.
func NewProgramT(name string) *ProgramT { return &ProgramT{name: name} }

func (t *ProgramT) Helper()                         {}
func (t *ProgramT) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (t *ProgramT) Errorf(format string, args ...any) {
	t.failed = true
	fmt.Fprintf(os.Stderr, t.name+": "+format+"\n", args...)
}
func (t *ProgramT) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	t.RunCleanups()
	os.Exit(1)
}
func (t *ProgramT) Failed() bool     { return t.failed }
func (t *ProgramT) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

// RunCleanups runs the cleanups registered so far, last first, and removes
// the fixture images' archives.
func (t *ProgramT) RunCleanups() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
	RemoveFixtures()
}
