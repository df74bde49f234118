// Package deploy holds Nebula's deployment files, no Go code: the containerd
// CRI drop-in (containerd/), the Kubernetes RuntimeClass and the node
// installer's DaemonSet (kubernetes/), the script that builds the
// installer's image (installer/build.sh; the program is
// cmd/nebula-installer), Knative examples (knative/), the Prometheus scrape
// config (prometheus/) and a Grafana dashboard (grafana/).
//
// deploy_test.go decodes every manifest strictly into the Kubernetes API
// types (Knative and Prometheus Operator objects into local mirrors of
// theirs, their PodSpec into corev1's), so that an unknown or misspelt
// field fails, and checks names and ports against the code: the runtime
// handler and annotation prefix of the drop-in, oci.DefaultPort,
// oci.DefaultMetricsPort, Nebula's knobs, and the metric names package
// events registers.
package deploy
