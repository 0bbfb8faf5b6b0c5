"""The operator's test harness (what kopf.testing is to kopf): test code of a source checkout, never imported by the
product, installed beside it so that the tests and the operator benchmark import it by package path.

- `swarm.testing.emulator`: an in-process emulated Kubernetes API (kmock), object factories, and `OperatorProcess`,
  the runner of `swarm operator` as a process (both tiers).
- `swarm.testing.control_plane`: a real control plane on loopback (etcd, kube-apiserver, controller manager,
  scheduler, kwok), from the binaries `make cluster-bins` builds.
- `swarm.testing.operator_process`: what the real-cluster tier installs into a control plane, how it empties it, and
  `swarm operator` run under the operator's ServiceAccount.

It needs the dev extras (kmock, cryptography, kubectl) and the checkout's crds/, manifests/ and tests/cluster/.
"""
