package wasmhost

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

func newReactorInvoker(tb testing.TB, cfg Config, name string) *ReactorInvoker {
	tb.Helper()
	mod := compile(tb, cfg, name)
	fsys, err := NewGuestFS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := NewReactorInvoker(context.Background(), mod, RunConfig{
		Args: []string{name}, Env: []string{"TASK=1"}, FS: fsys,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}

func TestReactorEcho(t *testing.T) {
	inv := newReactorInvoker(t, nil, functions.Reactor)
	for i, data := range []string{"hello", "", "second event"} {
		env := []string{"CE_ID=" + data, "CE_TYPE=t"}
		resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte(data), Env: env})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want := "ready " + data + "\x00" + strings.Join(env, "\x00") + "\x00"
		if got := string(resp.Stdout); got != want {
			t.Errorf("event %d: stdout %q, want %q", i, got, want)
		}
	}
}

func TestReactorFailures(t *testing.T) {
	inv := newReactorInvoker(t, NewConfig().WithStdoutLimit(100), functions.Reactor)
	ctx := context.Background()
	invoke := func(ctx context.Context, data string) error {
		_, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(data)})
		return err
	}
	var ee *abi.ExitError
	if err := invoke(ctx, "!"); !errors.Is(err, abi.ErrTrap) {
		t.Errorf("trap: %v, want ErrTrap", err)
	}
	if err := invoke(ctx, "%"); !errors.Is(err, abi.ErrTrap) || !strings.Contains(err.Error(), "event_env") {
		t.Errorf("event_env out of range: %v, want ErrTrap naming event_env", err)
	}
	if err := invoke(ctx, "#");  !errors.As(err, &ee) || ee.Code != 3 {
		t.Errorf("return 3: %v, want exit status 3", err)
	}
	if err := invoke(ctx, "$"); !errors.As(err, &ee) || ee.Code != 4 {
		t.Errorf("proc_exit(4): %v, want exit status 4", err)
	}
	if err := invoke(ctx, strings.Repeat("x", 200)); !errors.Is(err, abi.ErrOutputLimit) {
		t.Errorf("200 bytes out: %v, want ErrOutputLimit", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := invoke(tctx, "@"); !errors.Is(err, abi.ErrTimeout) {
		t.Errorf("loop: %v, want ErrTimeout", err)
	}
	if err := invoke(ctx, "fine"); err != nil {
		t.Errorf("after the failures: %v", err)
	}
}

// stateReport is what reactorstate.wat reports of each event.
type stateReport struct {
	Pages, G, Events, Marker, Init, Data, Fd4Errno, EnvSize uint32
	Random                                                 [16]byte
	Beyond, OpenErrno, EnvWord                             uint32
}

func TestReactorFreshState(t *testing.T) {
	inv := newReactorInvoker(t, nil, functions.ReactorState)
	var prev stateReport
	for i := range 4 {
		env := []string{"CE_ID=event-" + strings.Repeat("x", i), "CE_SECRET=s" + string(rune('0'+i))}
		resp, err := inv.Invoke(context.Background(), &abi.Request{Env: env})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		var r stateReport
		if err := binary.Read(bytes.NewReader(resp.Stdout), binary.LittleEndian, &r); err != nil {
			t.Fatalf("event %d: report %q: %v", i, resp.Stdout, err)
		}
		wantEnv := strings.Join(env, "\x00") + "\x00"
		want := stateReport{Pages: 2, G: 42, Events: 0, Marker: 0, Init: 0x54494e49,
			Data: 0x70616e73, Fd4Errno: 8, EnvSize: uint32(len(wantEnv)), Random: r.Random}
		if r != want {
			t.Errorf("event %d saw %+v, want %+v", i, r, want)
		}
		if got := string(resp.Stdout[60:]); got != wantEnv {
			t.Errorf("event %d: variables %q, want %q", i, got, wantEnv)
		}
		if i > 0 && r.Random == prev.Random {
			t.Errorf("event %d: random_get repeated event %d's bytes % x", i, i-1, r.Random)
		}
		prev = r
	}
}


func TestReactorRunRefused(t *testing.T) {
	mod := compile(t, nil, functions.Reactor)
	if _, err := mod.Run(context.Background(), RunConfig{}); !errors.Is(err, ErrReactorRun) {
		t.Errorf("Run: %v, want ErrReactorRun", err)
	}
}
