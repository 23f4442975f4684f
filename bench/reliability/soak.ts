/**
 * `npm run soak` (node dist/bench/reliability/soak.js): N concurrent clients through one governed
 * proxy (its own process, the built CLI; `--proxy in-process` to run it inside) with a mixed
 * workload for a set time, against a PostgreSQL cluster started for the run (or
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
    proxy: 'process (default: the built CLI as its own process) | in-process',
    warmup: 'the RSS trend is fitted from then on (default 40% of the duration)',
    'max-rss-growth': 'allowed growth of the RSS trend line after warm-up, percent (default 10)',
    'fd-settle': "the proxy's descriptors must be back this long after the clients closed (default 10s)",
    upstream: 'postgres://superuser:password@host:port (default: start a cluster)',
  });
  const clients = Number(args.get('clients') ?? 500);
  if (!Number.isInteger(clients) || clients < 1 || clients > 5000)
    throw new Error('--clients must be 1..5000');
  const durationMs = parseDuration(args.get('duration') ?? '2m');
  const proxy = args.get('proxy') ?? 'process';
  if (proxy !== 'process' && proxy !== 'in-process') throw new Error('--proxy must be process or in-process');
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
      proxy,
      ...(args.has('fd-settle') ? { fdSettleMs: parseDuration(args.get('fd-settle')!) } : {}),
      ...(args.has('warmup') ? { warmupMs: parseDuration(args.get('warmup')!) } : {}),
      ...(args.has('max-rss-growth') ? { maxRssGrowth: Number(args.get('max-rss-growth')) / 100 } : {}),
      progress: (l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`),
    });
    // one line per RSS sample ([seconds, MiB]) instead of four
    const json = JSON.stringify(r, null, 2).replace(/\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]/g, '[$1, $2]');
    process.stdout.write(`${json}\n`);
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
