// Package harness runs Nebula's end-to-end tests against the real thing: a
// private containerd daemon (its own root, state and sockets under a temp
// dir), real runc, the freshly built shim on the daemon's PATH, and images
// built by `nebula build`.
//
// The daemons, ctr and containerd-shim-runc-v2 are the pinned versions that
// hack/install-tools.sh builds into /var/cache/nebula/tools. A missing tool fails the test:
// end-to-end tests never skip.
//
// StartCRI adds containerd's CRI plugin (cri.go), a CNI bridge (cni.go,
// with its iptables check in iptables.go) and crictl, through which pods
// and containers are run and inspected (crictl.go); StartKubernetes
// (k8s.go) runs a single-node Kubernetes on top of that, from the binaries
// hack/install-k8s.sh builds into /var/cache/nebula/k8s-VERSION.
//
// Each Daemon checks after itself, when its test ends, that no shim process,
// mount or container cgroup is left, and fails the test if one is.
package harness
