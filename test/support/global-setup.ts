/**
 * vitest global setup: one PostgreSQL cluster for the whole run, or an existing server named by
 * DBGUARD_TEST_PGURL. Tests read it with `inject('pg')`.
 */
import type { TestProject } from 'vitest/node';
import { ensureFreshBuild } from './fresh-build.js';
import { type PgServer, type RunningCluster, serverFromUrl, startCluster } from './pg-cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pg: PgServer;
  }
}

let cluster: RunningCluster | undefined;

export async function setup(project: TestProject) {
  ensureFreshBuild();
  if (process.env.DBGUARD_TEST_PGURL) {
    project.provide('pg', serverFromUrl(process.env.DBGUARD_TEST_PGURL));
    return;
  }
  cluster = await startCluster();
  const { stop: _s, pause: _p, resume: _r, ...server } = cluster;
  project.provide('pg', server);
}

export async function teardown() {
  await cluster?.stop();
}
