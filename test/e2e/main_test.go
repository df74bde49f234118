// Package e2e drives Nebula through a real containerd daemon, real runc and
// images built by `nebula build`, with both the containerd Go client and the
// ctr binary as a user types it. See package harness.
package e2e

import (
	"os"
	"testing"

	"nebula.dev/nebula/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveFixtures()
	os.Exit(code)
}
