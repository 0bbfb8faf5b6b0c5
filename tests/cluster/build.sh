#!/usr/bin/env bash
# Builds the pinned control plane of the operator's real-cluster tests (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok) into $CLUSTER_BINS (default .cache/cluster-bins/<release> in the
# repo), from tests/cluster/bins/go.mod with `go build`: only the Go module proxy is used. Binaries built from the
# same go.mod, go.sum and flags are reused; the Go module and build caches make a rebuild fast.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
release="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$here/bins/go.mod")"
out="${CLUSTER_BINS:-$root/.cache/cluster-bins/$release}"
minor="${release#v1.}"; minor="${minor%%.*}"
# Kubernetes binaries report their release (kubectl refuses to talk to a server that says v0.0.0-master).
version_flags="-X k8s.io/component-base/version.gitVersion=$release -X k8s.io/component-base/version.gitMajor=1"
version_flags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ldflags="-s -w $version_flags"
stamp="$(cat "$here/bins/go.mod" "$here/bins/go.sum" "$here/bins/etcd/main.go" <(echo "$ldflags") | sha256sum | cut -c1-16)"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
if [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" ]]; then
  echo "control plane $release: reusing $out"
  exit 0
fi
mkdir -p "$out"
rm -f "$out/.stamp"
cd "$here/bins"
# Go's caches in the repo's ignored .cache/ unless the environment names others.
export GOMODCACHE="${GOMODCACHE:-$root/.cache/go/mod}" GOCACHE="${GOCACHE:-$root/.cache/go/build}"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
for t in "${tools[@]}"; do
  case "$t" in
    etcd) pkg=./etcd ;;
    kwok) pkg=sigs.k8s.io/kwok/cmd/kwok ;;
    *) pkg="k8s.io/kubernetes/cmd/$t" ;;
  esac
  echo "building $t ($pkg)"
  go build -trimpath -ldflags="$ldflags" -o "$out/$t.tmp" "$pkg"
  mv "$out/$t.tmp" "$out/$t"
done
echo "$stamp" > "$out/.stamp"
echo "control plane $release built into $out in $(( $(date +%s) - start )) s"
