# syntax=docker/dockerfile:1
# One image for every dbguard component: the operator (`dbguard operator`), the injected sidecar and the
# gateway (`dbguard proxy`), and the CLI. The entrypoint is `dbguard`; Kubernetes passes the subcommand as args.
#
#   docker build -t ghcr.io/dbguard/dbguard:v0.1.0 .
#
# Stage 1 compiles TypeScript with the dev dependencies; stage 2 keeps only production dependencies; the final
# stage is distroless Node.js (no shell, no package manager, no compiler), runs as uid 65532 and needs no
# writable path of its own (the sidecar's policy cache is an emptyDir), so it runs with a read-only root.

ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY api api
COPY policy policy
COPY sidecar sidecar
COPY operator operator
COPY cli cli
COPY scripts scripts
COPY bench bench
# the benchmarks (compiled with the rest, never run in the image) import the test cluster, polling, wire and one-shot query helpers
COPY test/support/pg-cluster.ts test/support/pg-cluster.ts
COPY test/support/until.ts test/support/until.ts
COPY test/support/wire.ts test/support/wire.ts
COPY test/support/admin.ts test/support/admin.ts
RUN npm run build

FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /src
COPY package.json package-lock.json ./
# `pg` is a devDependency that `dbguard check --upstream` and `dbguard demo` load at run time: keep it, at
# the version the lockfile pins.
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm install --no-save --omit=dev --no-audit --no-fund \
      "pg@$(node -p "require('./package-lock.json').packages['node_modules/pg'].version")" \
 && rm -rf /root/.npm

FROM gcr.io/distroless/nodejs${NODE_VERSION}-debian12:nonroot
LABEL org.opencontainers.image.title="dbguard" \
      org.opencontainers.image.description="PostgreSQL governance proxy and operator for Kubernetes" \
      org.opencontainers.image.source="https://github.com/dbguard/dbguard" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# `dbguard demo` reads its sample policy and data from here
COPY examples/demo ./examples/demo
ENV NODE_ENV=production
USER 65532:65532
EXPOSE 5432 8443 9090
# node flags: cli/node-flags.ts says why (a larger young generation: fewer collection pauses)
ENTRYPOINT ["/nodejs/bin/node", "--min-semi-space-size=8", "/app/dist/cli/main.js"]
CMD ["--help"]
