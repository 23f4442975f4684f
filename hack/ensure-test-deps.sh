#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: PostgreSQL server binaries (initdb, postgres),
# psql and pgbench from Debian's packages, openssl, and shellcheck (the chart test lints the shell scripts).
# Needs root (or sudo) and apt-get; elsewhere it says what to install and fails.
set -euo pipefail

have_pg() {
  { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } &&
    command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1
}

# The compatibility matrix's Java client (pgjdbc, compiled test program).
bash "$(dirname "$0")/build-test-clients.sh"

# Python packages of the ORM tests (SQLAlchemy over psycopg), exactly as pinned in test/requirements.txt.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQUIREMENTS="$ROOT/test/requirements.txt"
have_py() {
  python3 - "$REQUIREMENTS" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if line:
        name, pin = line.split('==')
        assert version(name) == pin, name
PY
}
if ! have_py; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "dbguard tests need python3 (3.11) with the packages of test/requirements.txt" >&2
    exit 1
  fi
  echo "--- installing the Python packages of test/requirements.txt"
  python3 -m pip install --user --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  if ! have_py; then
    echo "the Python packages of test/requirements.txt are still missing after pip install" >&2
    exit 1
  fi
fi

# The real-Kubernetes tier (test/kube): kube-apiserver, etcd and helm built from the pinned Go modules in
# hack/kube-testenv (cached; a second run costs nothing). Without Go (or when a build fails) the rest of the
# suite still runs and test/kube fails with one line naming the build command: never silently green.
build_kube_testenv() {
  if ! command -v go >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # Debian's Go is older than the pinned one: build.sh then lets Go fetch the pinned toolchain
    # (golang.org/toolchain) from the Go module proxy.
    echo "--- installing Go from Debian's packages (hack/kube-testenv needs a Go toolchain)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null || true
  fi
  bash "$ROOT/hack/kube-testenv/build.sh" >/dev/null ||
    echo "kube-testenv: build failed; test/kube will fail until hack/kube-testenv/build.sh succeeds" >&2
}

if have_pg && command -v openssl >/dev/null 2>&1 && command -v shellcheck >/dev/null 2>&1; then
  build_kube_testenv
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "dbguard tests need PostgreSQL server binaries, psql, pgbench, openssl and shellcheck." >&2
    echo "Install them (Debian/Ubuntu: apt-get install postgresql openssl shellcheck) or set DBGUARD_TEST_PGURL." >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get: install PostgreSQL (server + client + pgbench), openssl and shellcheck yourself" >&2
  exit 1
fi
# Debian clusters that exist before the install are someone else's: never touched.
clusters() { if command -v pg_lsclusters >/dev/null 2>&1; then pg_lsclusters -h 2>/dev/null | awk '{print $1 "/" $2}'; fi; }
before="$(clusters)"
echo "--- installing PostgreSQL, openssl and shellcheck from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq postgresql postgresql-contrib openssl shellcheck >/dev/null
# The tests start their own throwaway clusters: stop the default cluster the package just created and
# started, and only that one.
for c in $(clusters); do
  if printf '%s\n' "$before" | grep -qxF "$c"; then continue; fi
  $SUDO pg_ctlcluster "${c%%/*}" "${c#*/}" stop || true
done
build_kube_testenv
have_pg && command -v shellcheck >/dev/null 2>&1
