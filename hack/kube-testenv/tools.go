//go:build tools

// The binaries this module builds; the imports keep them (and their go.sum lines) in `go mod tidy`.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
