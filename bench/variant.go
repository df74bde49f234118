package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"

	nboci "nebula.dev/nebula/oci"
)

// plantVariant replaces the module at module in cont's rootfs snapshot by
// the same module with a custom section holding a random nonce: the same
// code under a digest the shim has never compiled.
func (s *study) plantVariant(ctx context.Context, cont containerd.Container, module string) (digest string, err error) {
	info, err := cont.Info(ctx)
	if err != nil {
		return "", err
	}
	mounts, err := s.client.SnapshotService(info.Snapshotter).Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "nebula-bench-rootfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return "", fmt.Errorf("mounting the snapshot: %w", err)
	}
	werr := func() error {
		p := filepath.Join(dir, module)
		wasm, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		variant, err := moduleVariant(wasm)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, variant, 0o755); err != nil {
			return err
		}
		sum := sha256.Sum256(variant)
		digest = hex.EncodeToString(sum[:])
		return nil
	}()
	if err := mount.UnmountAll(dir, 0); err != nil && werr == nil {
		werr = fmt.Errorf("unmounting the snapshot: %w", err)
	}
	return digest, werr
}

// removeVariant removes the shim's cache entry of a variant, or records it
// as left over.
func (s *study) removeVariant(digest string) {
	if digest == "" {
		return
	}
	if s.cfg.CacheDir != "" {
		p := filepath.Join(s.cfg.CacheDir, digest)
		if _, err := os.Stat(p); err == nil && os.RemoveAll(p) == nil {
			return
		}
	}
	s.mu.Lock()
	s.leftovers = append(s.leftovers, digest)
	s.mu.Unlock()
}

// moduleVariant appends a custom section ("nebula-bench-variant", 16
// random bytes) to a WebAssembly module. Custom sections do not change
// what a module does; they do change its digest.
func moduleVariant(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || !bytes.HasPrefix(wasm, nboci.WasmMagic) {
		return nil, errors.New("not a WebAssembly module")
	}
	name := "nebula-bench-variant"
	nonce := make([]byte, 16)
	rand.Read(nonce)
	var payload []byte
	payload = appendULEB(payload, uint64(len(name)))
	payload = append(payload, name...)
	payload = append(payload, nonce...)
	out := slices.Clip(slices.Clone(wasm))
	out = append(out, 0) // custom section id
	out = appendULEB(out, uint64(len(payload)))
	return append(out, payload...), nil
}

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}
