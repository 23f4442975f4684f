#!/usr/bin/env bash
# Builds the test tier's real Kubernetes from pinned Go modules: kube-apiserver (k8s.io/kubernetes) and
# etcd (go.etcd.io/etcd/server/v3) from this directory's module, helm (helm.sh/helm/v4) from ./helm.
# Binaries land in a cache directory keyed by the pinned versions and the Go toolchain, so a second run
# costs nothing. Prints the cache's bin directory on its last line of stdout (progress goes to stderr).
#   --bin-dir           build nothing: print the bin directory if all three binaries are there, else fail
#   KUBE_TESTENV_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/dbguard/kube-testenv, shared by every
#                       checkout on the machine, so a fresh clone does not build again)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

if ! command -v go >/dev/null 2>&1; then
  echo "kube-testenv: no Go toolchain (go) on PATH: install Go >= 1.21 to build kube-apiserver, etcd and helm (hack/kube-testenv/build.sh)" >&2
  exit 1
fi
# An older Go (>= 1.21) fetches the pinned toolchain (golang.org/toolchain) from the Go module proxy.
TOOLCHAIN="$(awk '$1 == "toolchain" { print $2 }' "$HERE/go.mod")"
if [ "$(printf '%s\n' "$TOOLCHAIN" "$(go env GOVERSION)" | sort -V | head -1)" != "$TOOLCHAIN" ]; then
  export GOTOOLCHAIN="$TOOLCHAIN"
fi

# The pinned versions, read from the go.mod files (the single source of truth).
pinned() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
K8S="$(pinned k8s.io/kubernetes "$HERE/go.mod")"
ETCD="$(pinned go.etcd.io/etcd/server/v3 "$HERE/go.mod")"
HELM="$(pinned helm.sh/helm/v4 "$HERE/helm/go.mod")"
GOV="$(go env GOVERSION)"
# RECIPE: bump when the build itself (flags below) changes, so cached binaries are rebuilt.
RECIPE=1
SUM="$( (cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/helm/go.mod" "$HERE/helm/go.sum"; echo "$RECIPE") | sha256sum | cut -c1-10)"
KEY="k8s-${K8S}_etcd-${ETCD}_helm-${HELM}_${GOV}_${SUM}"
BIN="${KUBE_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbguard/kube-testenv}/$KEY/bin"
if [ "${1:-}" = --bin-dir ]; then
  for b in etcd kube-apiserver helm; do
    if [ ! -x "$BIN/$b" ]; then
      echo "kube-testenv: $b ($KEY) is not built: run hack/kube-testenv/build.sh (or make test)" >&2
      exit 1
    fi
  done
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

log() { echo "kube-testenv: $*" >&2; }
# -mod=readonly: go.sum is committed and complete, so a build never rewrites it.
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
build() { # name, module dir, package, ldflags
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  if [ -x "$BIN/$name" ]; then log "$name: cached ($BIN/$name)"; return; fi
  log "$name: building $pkg (minutes on 2 cores; module downloads first) ..."
  local start=$SECONDS
  (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$BIN/.$name.tmp" "$pkg")
  mv "$BIN/.$name.tmp" "$BIN/$name"
  log "$name: built in $((SECONDS - start))s"
}

MINOR="$(echo "$K8S" | cut -d. -f2)"
V=k8s.io/component-base/version
build etcd "$HERE" ./cmd/etcd ""
build kube-apiserver "$HERE" k8s.io/kubernetes/cmd/kube-apiserver \
  "-X $V.gitVersion=$K8S -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean"
build helm "$HERE/helm" helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=$HELM"
echo "$BIN"
