package shim

import (
	"testing"

	"nebula.dev/nebula/internal/hostcmd"
)

// TestCompileProtocol: the shim reads `nebula-host compile`'s exit codes as
// hostcmd defines them.
func TestCompileProtocol(t *testing.T) {
	for _, c := range []struct{ shim, host int }{
		{exitCompileInvalid, hostcmd.ExitCompileInvalid},
		{exitCompileCache, hostcmd.ExitCompileCache},
		{exitCompileMemory, hostcmd.ExitCompileMemory},
	} {
		if c.shim != c.host {
			t.Errorf("shim reads exit code %d where hostcmd exits %d", c.shim, c.host)
		}
	}
	if compileResult(hostcmd.CompileResult{Hit: true, Seconds: 1}) != (compileResult{Hit: true, Seconds: 1}) {
		t.Errorf("compileResult and hostcmd.CompileResult differ")
	}
}
