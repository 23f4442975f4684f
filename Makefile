# dbguard: the everyday targets. `make test` is the README's (and CI's) test command.
.PHONY: all deps build test typecheck lint demo bench generate chart-lint e2e clean

all: build

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

deps: node_modules/.package-lock.json

build: deps
	npm run build

typecheck: deps
	npm run typecheck

lint: deps
	npm run lint

# Installs PostgreSQL when missing, builds, checks types and style, then runs every test.
test: deps
	bash hack/ensure-test-deps.sh
	npm run build
	npm run typecheck
	npm run lint
	npm test

demo: build
	node dist/cli/main.js demo

bench: build
	npm run bench

generate: deps
	npm run generate

clean:
	rm -rf dist
