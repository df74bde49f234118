package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// runcOptions returns the options to hand containerd's runc code in place of
// opts: runc's own options unchanged, CRI's runtimeoptions.v1.Options
// translated, nil for nil. Any other type is an error, since runc's task
// service would panic on it.
func runcOptions(opts *anypb.Any) (*anypb.Any, error) {
	if opts == nil || (opts.GetTypeUrl() == "" && len(opts.GetValue()) == 0) {
		return nil, nil
	}
	v, err := typeurl.UnmarshalAny(opts)
	if err != nil {
		return nil, invalidArgument(fmt.Errorf("runtime options of type %q: %w", opts.GetTypeUrl(), err))
	}
	switch o := v.(type) {
	case *options.Options:
		return opts, nil
	case *runtimeoptions.Options:
		ro, err := parseRuntimeOptions(o)
		if err != nil {
			return nil, err
		}
		if ro == nil {
			return nil, nil
		}
		return typeurl.MarshalAnyToProto(ro)
	default:
		return nil, invalidArgument(fmt.Errorf("runtime options of type %q are not supported (want runc's options.Options or CRI's runtimeoptions.v1.Options)",
			opts.GetTypeUrl()))
	}
}

// parseRuntimeOptions decodes the TOML table CRI copies from a runtime's
// `options` section (or the file `ctr --runtime-config-path` names) into
// runc's options. Keys are runc's option names as containerd documents them
// for io.containerd.runc.v2 (BinaryName, Root, SystemdCgroup, ...).
func parseRuntimeOptions(o *runtimeoptions.Options) (*options.Options, error) {
	body := o.GetConfigBody()
	source := "runtime options"
	if p := o.GetConfigPath(); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, invalidArgument(fmt.Errorf("reading runtime options file: %w", err))
		}
		body, source = b, "runtime options file "+p
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var ro options.Options
	dec := toml.NewDecoder(bytes.NewReader(body)).DisallowUnknownFields()
	if err := dec.Decode(&ro); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, invalidArgument(fmt.Errorf("%s: unknown option %s (runc's options are BinaryName, Root, SystemdCgroup, NoPivotRoot, NoNewKeyring, ShimCgroup, IoUid, IoGid, CriuImagePath, CriuWorkPath)",
				source, strictKeys(strict)))
		}
		return nil, invalidArgument(fmt.Errorf("%s: %w", source, err))
	}
	return &ro, nil
}

func strictKeys(e *toml.StrictMissingError) string {
	keys := make([]string, len(e.Errors))
	for i := range e.Errors {
		keys[i] = strconv.Quote(strings.Join(e.Errors[i].Key(), "."))
	}
	return strings.Join(keys, ", ")
}
