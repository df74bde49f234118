// Command nebula is Nebula's command-line tool: it packages functions as OCI
// images (nebula build) for the containerd shim containerd-shim-nebula-v1.
//
// Run `nebula help` for the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nebula:", err)
		os.Exit(1)
	}
}

// newRootCommand returns the `nebula` command with every subcommand. Each
// subcommand lives in its own file as a newXxxCommand function.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "nebula",
		Short: "Run OCI-packaged functions as containers or WebAssembly modules under containerd",
		Long: `nebula is the command-line tool of Nebula, a containerd shim
(runtime io.containerd.nebula.v1) that runs OCI-packaged functions as runc
containers or as WebAssembly modules.`,
		Version: version(),
		// Errors are printed once, by main; usage is for flag mistakes only.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
	})
	root.AddCommand(newBuildCommand())
	root.AddCommand(newInvokeCommand())
	root.AddCommand(newBenchCommand())
	root.AddCommand(newSoakCommand())
	return root
}

// version is the module version nebula was built from, if known.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
