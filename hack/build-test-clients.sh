#!/usr/bin/env bash
# Builds the compatibility matrix's non-Node clients (test/compat/): pgjdbc, pinned, fetched from Maven
# Central into .cache/test-clients (gitignored), and the Java test program compiled against it.
# Called by hack/ensure-test-deps.sh; a missing tool fails with the install step.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PGJDBC_VERSION=42.7.4
OUT="$ROOT/.cache/test-clients"
mkdir -p "$OUT/java"
for tool in mvn javac java; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "the pgjdbc row of the compatibility matrix needs $tool: apt-get install -y default-jdk-headless maven" >&2
    exit 1
  fi
done
JAR="$OUT/postgresql-$PGJDBC_VERSION.jar"
if [ ! -f "$JAR" ]; then
  echo "--- fetching pgjdbc $PGJDBC_VERSION from Maven Central"
  mvn -q dependency:copy -Dartifact="org.postgresql:postgresql:$PGJDBC_VERSION" -DoutputDirectory="$OUT" >&2
fi
SRC="$ROOT/test/compat/java/Compat.java"
if [ ! -f "$OUT/java/Compat.class" ] || [ "$SRC" -nt "$OUT/java/Compat.class" ]; then
  javac -d "$OUT/java" -cp "$JAR" "$SRC"
fi

# pgx (test/compat/go, pinned by go.mod/go.sum), built once per source change
if ! command -v go >/dev/null 2>&1; then
  echo "the pgx row of the compatibility matrix needs go: install Go 1.22+ (https://go.dev/doc/install)" >&2
  exit 1
fi
GOSRC="$ROOT/test/compat/go"
if [ ! -x "$OUT/compat-go" ] || [ -n "$(find "$GOSRC" -newer "$OUT/compat-go" -type f)" ]; then
  (cd "$GOSRC" && go build -o "$OUT/compat-go" .)
fi
