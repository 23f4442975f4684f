/**
 * `dbguard demo`: the whole product on one machine with no PostgreSQL install. An embedded PostgreSQL
 * (PGlite, WebAssembly) seeded with a small shop, `dbguard proxy` in front with the sample policy in
 * examples/demo/policy.yaml (an allow-list), and the lines to try it: a masked identity, an exempt one,
 * three queries (masked, blocked, allowed), and an intern whose allow-list refuses a join to a table it
 * does not name. `--tour` runs those queries itself and exits.
 */

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CompiledPolicy } from '../api/compiled.js';
import { parseListen } from '../api/listen.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [
  {
    name: 'listen',
    default: '127.0.0.1:6432',
    help: 'where the proxy listens (a busy port falls back to a free one)',
  },
  {
    name: 'audit-log',
    help: 'audit events file (default: a file in a temporary directory, printed at start)',
  },
  {
    name: 'tour',
    boolean: true,
    help: 'run the sample queries as each identity, print the results and exit',
  },
  { name: 'help', boolean: true, help: 'show this help' },
];

/** examples/demo, found from this module whether it runs from dist/ or from source. */
export function demoDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = path.join(dir, 'examples', 'demo');
    if (fs.existsSync(path.join(candidate, 'policy.yaml'))) return candidate;
    dir = path.dirname(dir);
  }
  throw new Error('examples/demo not found next to the dbguard installation');
}

export const TOUR = [
  {
    label: 'masked for analyst, real for auditor',
    sql: 'SELECT name, email, ssn, card_number, birth_date FROM customers ORDER BY id LIMIT 3',
  },
  { label: 'blocked for everyone', sql: 'DROP TABLE orders' },
  {
    label: 'allowed',
    sql: 'SELECT status, count(*) AS orders, sum(total_cents) / 100.0 AS revenue FROM orders GROUP BY status ORDER BY status',
  },
];

async function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

export interface DemoHandle {
  proxyHost: string;
  proxyPort: number;
  auditFile: string;
  policy: CompiledPolicy;
  close(): Promise<void>;
}

/** Start the embedded database, seed it and put the proxy in front. */
export async function startDemo(opts: {
  listen: string;
  auditLog?: string;
  log?: (line: string) => void;
}): Promise<DemoHandle> {
  const say = opts.log ?? (() => {});
  let host: string;
  let port: number;
  try {
    ({ host, port } = parseListen(opts.listen, { defaultHost: '127.0.0.1' }));
  } catch (err) {
    throw new UsageError(`--listen: ${(err as Error).message}`);
  }
  if (port !== 0 && !(await portFree(host, port))) {
    say(`port ${port} is busy; using a free one`);
    port = 0;
  }
  const dir = demoDir();
  const { loadPolicyFiles } = await import('../policy/load.js');
  const loaded = loadPolicyFiles([
    { name: path.join(dir, 'policy.yaml'), text: fs.readFileSync(path.join(dir, 'policy.yaml'), 'utf8') },
  ]);
  if (!loaded.ok) throw new Error(`demo policy is invalid: ${loaded.errors.join('; ')}`);
  const policy = loaded.compiled;

  say('starting the embedded PostgreSQL (PGlite)...');
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const db = await PGlite.create();
  await db.exec(fs.readFileSync(path.join(dir, 'seed.sql'), 'utf8'));
  const dbServer = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 64 });
  await dbServer.start();
  const dbPort = Number(/:(\d+)$/.exec(dbServer.getServerConn())?.[1]);

  const engine = await import('../policy/engine.js');
  await engine.initParser();
  const { loadAuditParser, openAuditLog } = await import('../sidecar/audit/index.js');
  await loadAuditParser();
  const auditFile =
    opts.auditLog ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-demo-')), 'audit.jsonl');
  const audit = await openAuditLog(auditFile, {});
  const { Governor } = await import('../sidecar/governor.js');
  const { startProxy } = await import('../sidecar/proxy.js');
  const governor = new Governor({ policy: () => policy, audit });
  const proxy = await startProxy({
    listen: { host, port },
    upstream: { host: '127.0.0.1', port: dbPort, sslmode: 'disable' },
    defaultDatabase: 'postgres',
    decisionPoint: governor,
    // The demo's own output is the tour; proxy logs only when asked for.
    logger: process.env.DBGUARD_DEMO_LOG
      ? (await import('../sidecar/log.js')).jsonLogger()
      : { log: () => {} },
  });
  return {
    proxyHost: proxy.host,
    proxyPort: proxy.port,
    auditFile,
    policy,
    async close() {
      await proxy.close();
      await audit.close();
      await dbServer.stop();
      await db.close();
    },
  };
}

/** The intern's allow-list (SELECT on public.orders only): what it names runs, a join beyond it does not. */
export const ALLOW_LIST_TOUR = [
  {
    label: 'allowed: the allow-list names orders',
    sql: 'SELECT status, count(*) AS orders FROM orders GROUP BY status ORDER BY status',
  },
  {
    label: 'refused: the join reads customers, which no rule allows',
    sql: 'SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id LIMIT 3',
  },
];

async function runTour(h: DemoHandle): Promise<void> {
  const pg = (await import('pg')).default;
  const tours: [string, typeof TOUR][] = [
    ['analyst', TOUR],
    ['auditor', TOUR],
    ['intern', ALLOW_LIST_TOUR],
  ];
  for (const [user, queries] of tours) {
    const client = new pg.Client({ host: h.proxyHost, port: h.proxyPort, user, database: 'postgres' });
    await client.connect();
    process.stdout.write(`\n== as ${user}\n`);
    for (const q of queries) {
      process.stdout.write(`\n-- ${q.label}\n${q.sql};\n`);
      try {
        const r = await client.query(q.sql);
        if (r.rows.length) console.table(r.rows);
        else process.stdout.write(`${r.command}\n`);
      } catch (err) {
        const e = err as { code?: string; message: string };
        process.stdout.write(`ERROR ${e.code}: ${e.message}\n`);
      }
    }
    await client.end();
  }
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    process.stdout.write(
      `${helpText('demo', 'An embedded database with sample data, a sample policy and a proxy in front.', FLAGS)}\n`,
    );
    return 0;
  }
  const h = await startDemo({
    listen: flags.get('listen')!,
    auditLog: flags.get('audit-log'),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  if (flags.has('tour')) {
    try {
      await runTour(h);
    } finally {
      await h.close();
    }
    process.stdout.write(`\nAudit trail: ${h.auditFile}\n`);
    return 0;
  }
  const url = (user: string) => `postgres://${user}@${h.proxyHost}:${h.proxyPort}/postgres`;
  process.stdout.write(
    [
      '',
      `dbguard demo: an embedded PostgreSQL with a sample shop, dbguard proxy in front on ${h.proxyHost}:${h.proxyPort}`,
      `policy ${h.policy.policy} (${h.policy.version.slice(0, 19)}...) from examples/demo/policy.yaml`,
      '',
      'Connect as a masked identity and as one exempt from masking:',
      `  psql "${url('analyst')}"`,
      `  psql "${url('auditor')}"`,
      '',
      'Then try:',
      ...TOUR.map((q) => `  ${q.sql};`.padEnd(72) + `  -- ${q.label}`),
      '',
      'The intern has an allow-list (SELECT on orders, nothing else):',
      `  psql "${url('intern')}"`,
      ...ALLOW_LIST_TOUR.map((q) => `  ${q.sql};`.padEnd(72) + `  -- ${q.label}`),
      '',
      `Audit trail (JSON lines): ${h.auditFile}`,
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await h.close();
  return 0;
}
