package hostcmd

import (
	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/spawn"
)

// supervise runs the per-invocation supervisor of the process runtime when
// args (os.Args) are `nebula-host supervise`: spawn re-executes the host
// program that way for every event (see spawn.Supervise). It reports
// whether it ran.
func supervise(args []string) (code int, ran bool) {
	if len(args) < 2 || args[1] != spawn.SuperviseArg {
		return 0, false
	}
	return spawn.Supervise(args[2:]), true
}

// supervisedConfig makes spawn run each entrypoint under this program in
// supervise mode.
func supervisedConfig(cfg spawn.Config) spawn.Config {
	return cfg.WithSupervisor("/proc/self/exe", "nebula-host", spawn.SuperviseArg)
}

// reapOrphansOf starts the orphan reaper fitting the runtime: with a
// process per event, one that leaves the invocations' supervisors to spawn.
func reapOrphansOf(runtime string) (stop func()) {
	if runtime == abi.RuntimeProcess {
		return spawn.ReapOrphans()
	}
	return reapOrphans()
}
