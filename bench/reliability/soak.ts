/**
 * `npm run soak` (node dist/bench/reliability/soak.js): N concurrent clients through one governed
 * proxy with a mixed workload for a set time, against a PostgreSQL cluster started for the run (or
 * `--upstream postgres://superuser:pass@host:port`, whose database `app` and role `app`/`app` must
 * exist). Prints progress, then the figures as JSON; exit code 1 when a criterion fails.
 */
import { type RunningCluster, startCluster } from '../../test/support/pg-cluster.js';
import { parseArgs, parseDuration } from './args.js';
import { runSoak } from './soak-core.js';

async function main() {
  const args = parseArgs(process.argv.slice(2), {
    clients: 'concurrent clients (default 500)',
    duration: 'how long the load runs: 30s, 5m, 1h (default 2m)',
    warmup: 'RSS is measured from then on (default 40% of the duration)',
    'max-rss-growth': 'allowed RSS growth after warm-up, percent (default 10)',
    upstream: 'postgres://superuser:password@host:port (default: start a cluster)',
  });
  const clients = Number(args.get('clients') ?? 500);
  if (!Number.isInteger(clients) || clients < 1 || clients > 5000)
    throw new Error('--clients must be 1..5000');
  const durationMs = parseDuration(args.get('duration') ?? '2m');
  let cluster: RunningCluster | undefined;
  let upstream: { host: string; port: number };
  let admin: { user: string; password: string };
  const given = args.get('upstream');
  if (given) {
    const u = new URL(given);
    upstream = { host: u.hostname, port: Number(u.port || 5432) };
    admin = { user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  } else {
    process.stderr.write('starting a PostgreSQL cluster for the soak\n');
    cluster = await startCluster({ settings: { max_connections: clients + 100 } });
    upstream = { host: cluster.host, port: cluster.port };
    admin = { user: 'postgres', password: 'postgres' };
  }
  try {
    const r = await runSoak({
      upstream,
      admin,
      clients,
      durationMs,
      ...(args.has('warmup') ? { warmupMs: parseDuration(args.get('warmup')!) } : {}),
      ...(args.has('max-rss-growth') ? { maxRssGrowth: Number(args.get('max-rss-growth')) / 100 } : {}),
      progress: (l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`),
    });
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    process.stderr.write(r.ok ? 'soak: PASS\n' : `soak: FAIL\n  ${r.failures.join('\n  ')}\n`);
    process.exitCode = r.ok ? 0 : 1;
  } finally {
    await cluster?.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`soak: ${(err as Error).message}\n`);
  process.exit(2);
});
