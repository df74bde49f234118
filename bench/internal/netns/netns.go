// Package netns makes a network namespace of its own with only the
// loopback interface up, for `nebula bench`'s function tasks, and dials
// into it.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// NS is a network namespace of the study's own, with only the loopback
// interface, up. Function tasks join it (their spec names its Path), so
// their front doors listen there and nowhere else, on ports that cannot
// clash with anything on the host; the study's client reaches them by
// creating its sockets inside it (DialContext).
type NS struct {
	dir, path string
}

// New creates the namespace and pins it with a bind mount of its nsfs
// file under a temporary directory. Close removes it.
func New() (*NS, error) {
	dir, err := os.MkdirTemp("", "nebula-bench-netns-")
	if err != nil {
		return nil, err
	}
	n := &NS{dir: dir, path: filepath.Join(dir, "net")}
	if err := os.WriteFile(n.path, nil, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	errc := make(chan error, 1)
	go func() {
		// This thread's namespace changes for good: the goroutine exits
		// locked, so the runtime ends the thread with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		if err := linkUp("lo"); err != nil {
			errc <- fmt.Errorf("bringing lo up: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, n.path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("pinning the network namespace: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating a network namespace: %w", err)
	}
	return n, nil
}

// linkUp sets IFF_UP on the interface name of the calling thread's
// network namespace.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// DialContext dials addr from inside the namespace: the socket is created
// on a thread that has joined it, and keeps belonging to it afterwards.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, err, restored := n.dialLocked(ctx, network, addr)
		if restored {
			runtime.UnlockOSThread()
		} // else the thread dies with this goroutine
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (n *NS) dialLocked(ctx context.Context, network, addr string) (c net.Conn, err error, restored bool) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, err, true
	}
	defer orig.Close()
	target, err := os.Open(n.path)
	if err != nil {
		return nil, err, true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns: %w", err), true
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	restored = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
	return c, err, restored
}

// Path is the namespace's file, for a runtime spec's network namespace.
func (n *NS) Path() string { return n.path }

// Close unpins the namespace (it goes away with its last user) and
// removes the directory.
func (n *NS) Close() error {
	err := unix.Unmount(n.path, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if rerr := os.RemoveAll(n.dir); err == nil {
		err = rerr
	}
	return err
}
