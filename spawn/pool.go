package spawn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A supervisor is a running Supervise process and the host's end of its
// control socket. It serves one invocation at a time.
type supervisor struct {
	p    *os.Process
	ctrl *os.File
	seq  uint32
}

// pool holds the idle supervisors of an Invoker.
type pool struct {
	argv []string // path, argv[0], args
	dir  string

	mu     sync.Mutex
	idle   []*supervisor
	closed bool
}

// get returns an idle supervisor, or starts one (always, if fresh).
func (p *pool) get(fresh bool) (*supervisor, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	if n := len(p.idle); n > 0 && !fresh {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	return p.start()
}

var errClosed = errors.New("spawn: invoker closed")

func (p *pool) start() (*supervisor, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The host's end goes to the runtime's poller.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctrl, child := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control")
	defer child.Close()
	null, err := devNull()
	if err != nil {
		ctrl.Close()
		return nil, err
	}
	proc, err := startOwned(p.argv[0], p.argv[1:], &os.ProcAttr{
		Dir:   p.dir,
		Env:   []string{},
		Files: []*os.File{null, null, os.Stderr, child},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("starting the supervisor: %w", err)
	}
	return &supervisor{p: proc, ctrl: ctrl}, nil
}

// put returns a supervisor that finished an invocation cleanly.
func (p *pool) put(s *supervisor) {
	p.mu.Lock()
	if !p.closed {
		p.idle = append(p.idle, s)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	s.stop()
}

// close stops the idle supervisors and any that is put back later.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, s := range idle {
		s.stop()
	}
}

// stop ends a supervisor: EOF on its control socket makes it kill what
// runs and exit; one that does not is killed after killGrace.
func (s *supervisor) stop() (*os.ProcessState, error) {
	s.ctrl.Close()
	grace := time.AfterFunc(killGrace, func() { _ = s.p.Kill() })
	state, err := s.p.Wait()
	grace.Stop()
	release(s.p.Pid)
	return state, err
}

// send sends the request of invocation seq: the tag, the sequence number
// and the stdio descriptors in one message, then the frame.
func (s *supervisor) send(seq uint32, stdio [3]*os.File, frame []byte) error {
	rc, err := s.ctrl.SyscallConn()
	if err != nil {
		return err
	}
	head := binary.BigEndian.AppendUint32([]byte{msgRun}, seq)
	rights := unix.UnixRights(int(stdio[0].Fd()), int(stdio[1].Fd()), int(stdio[2].Fd()))
	var n int
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		n, serr = unix.SendmsgN(int(fd), head, rights, nil, 0)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("sending the request to the supervisor: %w", err)
	}
	if _, err := s.ctrl.Write(append(head[n:], frame...)); err != nil {
		return fmt.Errorf("sending the request to the supervisor: %w", err)
	}
	return nil
}

// kill asks the supervisor to kill invocation seq.
func (s *supervisor) kill(seq uint32) {
	_, _ = s.ctrl.Write(binary.BigEndian.AppendUint32([]byte{msgKill}, seq))
	_ = s.p.Signal(syscall.SIGCONT) // a stopped supervisor could not act
}

// readMessage reads one message of the supervisor.
func readMessage(r io.Reader) (tag byte, payload []byte, err error) {
	var b [5]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return 0, nil, err
	}
	switch b[0] {
	case msgStarted:
		return b[0], nil, nil
	case msgExited:
		if _, err := io.ReadFull(r, b[1:5]); err != nil {
			return 0, nil, err
		}
		return b[0], b[1:5], nil
	case msgFailed:
		if _, err := io.ReadFull(r, b[1:5]); err != nil {
			return 0, nil, err
		}
		n := binary.BigEndian.Uint32(b[1:5])
		if n > 64<<10 {
			return 0, nil, fmt.Errorf("supervisor: message of %d bytes", n)
		}
		payload = make([]byte, n)
		_, err = io.ReadFull(r, payload)
		return b[0], payload, err
	}
	return 0, nil, fmt.Errorf("supervisor: unexpected message %q", b[0])
}
