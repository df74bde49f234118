//go:build k8s

// Package k8s runs Nebula functions on a real single-node Kubernetes
// (harness.StartKubernetes): etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet and kube-proxy built from source by
// hack/install-k8s.sh, on a private containerd with Nebula registered
// through deploy/containerd/nebula.toml, driven with kubectl as a user
// types it; and Knative Serving on that cluster (harness.InstallKnative,
// built by hack/install-knative.sh) running deploy/knative/service.yaml.
//
// The package builds only with the k8s tag (`make test-k8s`), so that
// `make test` does not need the cluster's binaries.
package k8s

import (
	"os"
	"testing"

	"nebula.dev/nebula/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveFixtures()
	os.Exit(code)
}
