//go:build tools

// The binary this module builds; the import keeps it (and its go.sum lines) in `go mod tidy`.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
