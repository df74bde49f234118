package shim

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRuncOptions(t *testing.T) {
	anyOf := func(v any) *anypb.Any { return mustAny(t, v) }
	file := filepath.Join(t.TempDir(), "opts.toml")
	os.WriteFile(file, []byte("BinaryName = \"crun\"\nSystemdCgroup = true\n"), 0o600)

	tests := []struct {
		name    string
		in      *anypb.Any
		want    *options.Options // nil: no options
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"runc options pass through", anyOf(&options.Options{BinaryName: "runc", Root: "/r"}), &options.Options{BinaryName: "runc", Root: "/r"}, ""},
		{"CRI body", anyOf(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"runc\"\nNoNewKeyring = true\nIoUid = 7\n")}),
			&options.Options{BinaryName: "runc", NoNewKeyring: true, IoUid: 7}, ""},
		{"CRI empty body", anyOf(&runtimeoptions.Options{}), nil, ""},
		{"ctr --runtime-config-path", anyOf(&runtimeoptions.Options{ConfigPath: file}), &options.Options{BinaryName: "crun", SystemdCgroup: true}, ""},
		{"unknown key", anyOf(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"runc\"\nBogusKnob = 1\n")}), nil, `unknown option "BogusKnob"`},
		{"bad TOML", anyOf(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = ")}), nil, "runtime options"},
		{"missing file", anyOf(&runtimeoptions.Options{ConfigPath: "/nonexistent/opts.toml"}), nil, "reading runtime options file"},
		{"foreign type", anyOf(durationpb.New(0)), nil, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runcOptions(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("err %v is not InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if got != nil {
					t.Fatalf("got options %v, want none", got)
				}
				return
			}
			v, err := typeurl.UnmarshalAny(got)
			if err != nil {
				t.Fatal(err)
			}
			o, ok := v.(*options.Options)
			if !ok {
				t.Fatalf("got %T, want runc's options", v)
			}
			if o.BinaryName != tt.want.BinaryName || o.Root != tt.want.Root || o.SystemdCgroup != tt.want.SystemdCgroup ||
				o.NoNewKeyring != tt.want.NoNewKeyring || o.IoUid != tt.want.IoUid {
				t.Errorf("got %+v, want %+v", o, tt.want)
			}
		})
	}
}

// TestInfoTranslatesOptions: containerd calls the shim's -info with the
// runtime's options on stdin; CRI's are translated as in Create, foreign
// ones refused.
func TestInfoTranslatesOptions(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is needed (runc features): %v", err)
	}
	m := NewManager()
	in, err := proto.Marshal(mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("BinaryName = \"runc\"\n")}))
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Info(context.Background(), bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != RuntimeName || info.Options.GetTypeUrl() != mustAny(t, &options.Options{}).GetTypeUrl() {
		t.Errorf("info %s with options %q, want %s with runc's options", info.Name, info.Options.GetTypeUrl(), RuntimeName)
	}
	bad, _ := proto.Marshal(mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("Nope = 1\n")}))
	if _, err := m.Info(context.Background(), bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), `unknown option "Nope"`) {
		t.Errorf("Info with an unknown option: %v", err)
	}
}

func mustAny(t *testing.T, v any) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
