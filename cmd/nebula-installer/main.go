// Command nebula-installer puts Nebula on a Kubernetes node. It runs in the
// privileged DaemonSet of deploy/kubernetes/installer.yaml, with the node's
// directories mounted under /host, from the image built by
//
//	deploy/installer/build.sh installer.tar   # localhost/nebula/installer:v1
//
// Usage:
//
//	nebula-installer install [flags]    copy the shim and nebula-host to the node's
//	                                    /usr/local/bin, the CRI drop-in to
//	                                    /etc/containerd/conf.d/nebula.toml,
//	                                    make config.toml import conf.d/*.toml, and restart
//	                                    containerd only if its configuration changed
//	nebula-installer uninstall [flags]  undo all of that (restart only if needed)
//	nebula-installer check [flags]      exit 0 if the node has exactly this version
//
// Everything is idempotent: files are compared before they are written and
// replaced atomically, so a second run (a restarted pod) changes nothing
// and does not restart containerd. Containerd is restarted through
// systemd's private D-Bus socket (/run/systemd/private, mounted from the
// node): RestartUnit, then wait until the unit is active again — a
// Type=notify unit is active once containerd serves. If it does not come
// back, the previous files are restored and containerd restarted again.
// Restarting containerd leaves running containers alone (its unit has
// KillMode=process), this installer's included.
//
// With --wait it then sleeps until SIGTERM, as a DaemonSet's container
// must; stopping the pod does not uninstall anything.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: nebula-installer install|uninstall|check [flags]

  install    copy the binaries (shim, nebula-host) and the CRI drop-in onto the
             node, make containerd's config import the drop-in, restart
             containerd if its config changed
  uninstall  remove them, restart containerd if its config changed
  check      exit 0 if the node has exactly these binaries and drop-in, imported

flags:
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "install" && args[0] != "uninstall" && args[0] != "check") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	mode := args[0]
	fl := flag.NewFlagSet("nebula-installer "+mode, flag.ContinueOnError)
	fl.SetOutput(stderr)
	in := Installer{Log: stdout}
	fl.StringVar(&in.HostRoot, "host-root", "/host", "where the node's directories are mounted")
	fl.StringVar(&in.BinDir, "bin-dir", "/usr/local/bin", "the node's directory for the binaries (on containerd's PATH)")
	fl.StringVar(&in.ConfigDir, "config-dir", "/etc/containerd/conf.d", "the node's directory for containerd config drop-ins")
	fl.StringVar(&in.ContainerdConfig, "containerd-config", "/etc/containerd/config.toml", "the node's containerd config")
	fl.StringVar(&in.BinSource, "bin-source", "/opt/nebula/bin", "the directory of binaries to install (the shim and nebula-host)")
	fl.StringVar(&in.SnippetSource, "snippet", "/opt/nebula/"+SnippetName, "the CRI config drop-in to install")
	restart := fl.String("restart", "systemd", "how to restart containerd when its config changed: systemd or none")
	unit := fl.String("unit", "containerd.service", "containerd's systemd unit")
	timeout := fl.Duration("timeout", 2*time.Minute, "how long containerd may take to come back")
	wait := fl.Bool("wait", false, "afterwards, sleep until SIGTERM or SIGINT (for a DaemonSet)")
	fl.Usage = func() { fmt.Fprint(stderr, usage); fl.PrintDefaults() }
	if err := fl.Parse(args[1:]); err != nil {
		return 2
	}
	if fl.NArg() != 0 {
		fl.Usage()
		return 2
	}
	switch *restart {
	case "systemd":
		in.Restart = systemdRestart(*unit, *timeout)
	case "none":
	default:
		fmt.Fprintf(stderr, "nebula-installer: -restart %q: want systemd or none\n", *restart)
		return 2
	}

	ctx := context.Background()
	var err error
	switch mode {
	case "install":
		_, err = in.Install(ctx)
	case "uninstall":
		_, err = in.Uninstall(ctx)
	case "check":
		err = in.Check()
	}
	if err != nil {
		fmt.Fprintf(stderr, "nebula-installer %s: %v\n", mode, err)
		return 1
	}
	fmt.Fprintf(stdout, "nebula-installer %s: done\n", mode)
	if *wait {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
	}
	return 0
}

// systemdRestart restarts unit through systemd's private socket and waits
// until it is active again.
func systemdRestart(unit string, timeout time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := dbus.NewSystemdConnectionContext(ctx)
		if err != nil {
			return fmt.Errorf("connecting to systemd (is the node's /run/systemd mounted?): %w", err)
		}
		defer conn.Close()
		done := make(chan string, 1)
		if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
			return err
		}
		select {
		case result := <-done:
			if result != "done" {
				return fmt.Errorf("restart job of %s: %s", unit, result)
			}
		case <-ctx.Done():
			return fmt.Errorf("restart job of %s: %w", unit, ctx.Err())
		}
		for {
			p, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
			if err != nil {
				return err
			}
			switch state := p.Value.Value(); state {
			case "active":
				return nil
			case "failed", "inactive":
				return fmt.Errorf("%s is %v after the restart", unit, state)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not active after %v", unit, timeout)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}
