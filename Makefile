# dbguard: the everyday targets. `make test` is the README's (and CI's) test command.
.PHONY: all deps build install test typecheck lint demo bench generate chart-lint e2e clean

all: build

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

deps: node_modules/.package-lock.json

build: deps
	npm run build

# Puts `dbguard` and `kubectl-dbguard` (the kubectl plugin: `kubectl dbguard ...`) on PATH.
install: build
	npm link

typecheck: deps
	npm run typecheck

lint: deps
	npm run lint

# Installs PostgreSQL when missing, builds, checks types and style, then runs every test; a test that was
# skipped or a test file with no test fails the run (test/support/every-test-ran.ts).
test: deps
	bash hack/ensure-test-deps.sh
	npm run build
	npm run typecheck
	npm run lint
	DBGUARD_REQUIRE_EVERY_TEST=1 npm test

demo: build
	node dist/cli/main.js demo

bench: build
	npm run bench

generate: deps
	npm run generate

# The chart's static checks (no helm needed), plus `helm lint` and `helm template` with the helm that
# hack/kube-testenv/build.sh built, else any helm on PATH. (`make test` runs them in test/kube/helm.test.ts.)
chart-lint: build
	@helm="$$(bash hack/kube-testenv/build.sh --bin-dir 2>/dev/null)/helm"; [ -x "$$helm" ] || helm="$$(command -v helm)"; \
	if [ -n "$$helm" ]; then \
	  "$$helm" lint charts/dbguard && "$$helm" template dbguard charts/dbguard --namespace dbguard-system >/dev/null && \
	  for v in examples/helm/*.yaml; do "$$helm" lint charts/dbguard -f "$$v" && \
	    "$$helm" template dbguard charts/dbguard --namespace dbguard-system -f "$$v" >/dev/null || exit 1; done; \
	else echo "chart-lint: helm not found, static checks only"; fi
	npx vitest run test/chart test/examples

# A kind cluster, the image, the chart, PostgreSQL and a labelled app: masking, blocking, approval (needs Docker).
e2e: build
	bash hack/kind-e2e.sh

clean:
	rm -rf dist
