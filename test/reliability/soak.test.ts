/**
 * A short soak in the test suite (issue #10): `npm run soak` runs the same for as long as asked.
 * Clients, duration and warm-up come from DBGUARD_SOAK_CLIENTS / DBGUARD_SOAK_MS (defaults: 500
 * clients, 20 s). It runs against its own PostgreSQL cluster: 500 sessions would starve the
 * server the other tests share. The proxy is the built CLI in its own process (`npm run build`
 * first), as in `npm run soak`.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runSoak } from '../../bench/reliability/soak-core.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';

let cluster: RunningCluster;
beforeAll(async () => {
  cluster = await startCluster({ settings: { max_connections: 700 } });
}, 60_000);
afterAll(async () => cluster?.stop());

it('500 concurrent clients, mixed workload: no unexpected error, no leak, one audit event per statement', async () => {
  const clients = Number(process.env.DBGUARD_SOAK_CLIENTS ?? 500);
  const durationMs = Number(process.env.DBGUARD_SOAK_MS ?? 20_000);
  const lines: string[] = [];
  const r = await runSoak({
    upstream: { host: cluster.host, port: cluster.port },
    admin: { user: 'postgres', password: 'postgres' },
    clients,
    durationMs,
    // 12 s of post-warm-up samples on a shared 2-core machine is too short a line to hold to 10%
    // (the heap still fills its new space: one CI run measured 134 → 170 MiB): the suite allows 25%
    // or 64 MiB, whichever is more, and 30 s for 500 clients' descriptors to close under load. The
    // issue's 10% and 10 s are judged by `npm run soak` runs of minutes (docs/reliability.md); what
    // this short form catches is a gross leak (over 2 KiB a statement at its ~30,000 statements).
    maxRssGrowth: Number(process.env.DBGUARD_SOAK_MAX_RSS_GROWTH ?? 0.25),
    rssSlackMb: 64,
    fdSettleMs: 30_000,
    progress: (l) => {
      lines.push(l);
      if (process.env.DBGUARD_SOAK_VERBOSE) process.stderr.write(`${l}\n`);
    },
  });
  console.log(
    JSON.stringify({ ...r, rss: { ...r.rss, samples: r.rss.samples.length }, progress: lines }, null, 1),
  );
  expect(r.failures).toEqual([]);
  expect(r.clients).toBe(clients);
  expect(r.proxy).toBe('process');
  expect(r.rss.trend?.samples).toBeGreaterThanOrEqual(3);
  for (const op of Object.values(r.byOp)) expect(op).toBeGreaterThan(0);
  expect(r.ok).toBe(true);
}, 480_000);
