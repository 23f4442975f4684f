/**
 * Everything the benchmark measures against, started by the benchmark itself on this machine:
 * a throwaway PostgreSQL with pgbench's tables and a 1,000,000-row `customers` table, pgbouncer
 * (session mode), the dbguard proxy as its own process with the realistic policy (audit All, and a
 * second one with audit None), and a bare Node pipe (the runtime's floor).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../cli/node-flags.js';
import { freePort, type RunningCluster, startCluster } from '../test/support/pg-cluster.js';
import { ensurePgbouncer, startPgbouncer } from './pgbouncer.js';
import { type AuditStatements, realisticPolicy } from './policy.js';
import { type Service, startService } from './procs.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/bench → dist/cli/main.js */
export const CLI = path.resolve(here, '../cli/main.js');
const PIPE = path.resolve(here, 'pipe-process.js');

export type TargetName =
  | 'direct'
  | 'pgbouncer'
  | 'dbguard'
  | 'dbguard-audit-none'
  | 'node-pipe'
  | 'dbguard-select'
  /** `--baseline DIR`: another build of dbguard (DIR/dist/cli/main.js), same policy, audit All */
  | 'dbguard-baseline';

export interface BenchEnv {
  pg: RunningCluster;
  dir: string;
  targets: Map<TargetName, { port: number; pid?: number; service?: Service }>;
  /** audit file of each dbguard process */
  auditFiles: Map<TargetName, string>;
  stop(): Promise<void>;
}

export interface EnvOptions {
  log: (line: string) => void;
  /** rows in the masked table */
  maskedRows: number;
  /** pgbench scale factor */
  scale: number;
  /** extra connections the server must accept (idle-connection test) */
  idleConnections: number;
  /** write CPU profiles of the dbguard process here (node --cpu-prof) */
  cpuProfDir?: string;
  /** the CLI of another dbguard build to run as target `dbguard-baseline` */
  baselineCli?: string;
}

function psql(pg: RunningCluster, db: string, sql: string): void {
  const bin = fs.existsSync(path.join(pg.bindir, 'psql')) ? path.join(pg.bindir, 'psql') : 'psql';
  const args = [
    '-X',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
    '-h',
    '127.0.0.1',
    '-p',
    String(pg.port),
    '-U',
    'postgres',
  ];
  try {
    execFileSync(bin, [...args, '-d', db, '-c', sql], {
      env: { ...process.env, PGPASSWORD: 'postgres' },
      stdio: 'pipe',
    });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`setup SQL failed: ${stderr || (err as Error).message}`);
  }
}

/**
 * `dbguard proxy` as the benchmarks and the soak run it (after the image's node flags): on
 * 127.0.0.1:`port`, plain TCP to database `app` upstream, one policy file, one audit file. Callers
 * append their own flags.
 */
export function proxyArgs(o: {
  cli: string;
  port: number;
  upstream: { host: string; port: number };
  policyFile: string;
  auditFile: string;
}): string[] {
  return [
    ...NODE_FLAGS, // as the image runs it
    o.cli,
    'proxy',
    '--listen',
    `127.0.0.1:${o.port}`,
    '--upstream',
    `postgres://${o.upstream.host}:${o.upstream.port}/app`,
    '--upstream-sslmode',
    'disable',
    '--policy-file',
    o.policyFile,
    '--audit-log',
    o.auditFile,
    // the soak (500 clients) and the idle-memory measure (2,000 connections) go past the default cap
    // of 100: they measure the proxy, not the guard a deployment sets
    '--max-connections',
    '0',
  ];
}

export async function startDbguard(
  name: TargetName,
  pg: RunningCluster,
  dir: string,
  audit: AuditStatements,
  cpuProfDir?: string,
  cli = CLI,
): Promise<{ service: Service; auditFile: string; policyFile: string }> {
  if (!fs.existsSync(cli)) throw new Error(`${cli} not found: run \`npm run build\` first`);
  const policyFile = path.join(dir, `${name}.policy.yaml`);
  const auditFile = path.join(dir, `${name}.audit.jsonl`);
  fs.writeFileSync(policyFile, realisticPolicy(pg.port, audit));
  const port = await freePort();
  const nodeArgs = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  const service = await startService(
    name,
    process.execPath,
    [
      ...nodeArgs,
      ...proxyArgs({ cli, port, upstream: { host: '127.0.0.1', port: pg.port }, policyFile, auditFile }),
      '--identity-service-account',
      'bench/app',
    ],
    port,
  );
  return { service, auditFile, policyFile };
}

export async function startEnv(o: EnvOptions): Promise<BenchEnv> {
  const pgbouncerBin = ensurePgbouncer(o.log);
  o.log('starting PostgreSQL ...');
  const pg = await startCluster({
    settings: { max_connections: Math.max(200, o.idleConnections + 100), log_min_messages: 'fatal' },
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-bench-'));
  const services: Service[] = [];
  const stop = async () => {
    for (const s of services.reverse()) await s.stop().catch(() => undefined);
    await pg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    o.log(`pgbench -i -s ${o.scale} (database app, owner app) ...`);
    const pgbench = fs.existsSync(path.join(pg.bindir, 'pgbench'))
      ? path.join(pg.bindir, 'pgbench')
      : 'pgbench';
    execFileSync(
      pgbench,
      ['-i', '-q', '-s', String(o.scale), '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'app', 'app'],
      {
        env: { ...process.env, PGPASSWORD: 'app' },
        stdio: 'pipe',
      },
    );
    o.log(
      `creating public.customers with ${o.maskedRows} rows (masked columns: email, ssn, card_number, salary, birth_date) ...`,
    );
    psql(
      pg,
      'app',
      `CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text, ssn text, card_number text,
         salary numeric, birth_date date, country text);
       INSERT INTO public.customers
         SELECT g, 'Customer ' || g, 'user' || g || '@example.org', lpad((g % 1000)::text, 3, '0') || '-45-6789',
                '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0'), 30000 + (g % 70000),
                date '1950-01-01' + (g % 20000), 'NL'
         FROM generate_series(1, ${o.maskedRows}) g;
       ALTER TABLE public.customers OWNER TO app;
       GRANT SELECT ON public.customers TO trustuser, md5user;
       GRANT USAGE ON SCHEMA public TO trustuser, md5user;`,
    );
    psql(pg, 'app', 'VACUUM ANALYZE public.customers'); // not inside the block above: VACUUM refuses transactions
    const targets: BenchEnv['targets'] = new Map();
    const auditFiles: BenchEnv['auditFiles'] = new Map();
    targets.set('direct', { port: pg.port });

    o.log('starting pgbouncer (session mode) ...');
    const bouncer = await startPgbouncer({
      bin: pgbouncerBin,
      port: await freePort(),
      upstreamPort: pg.port,
      users: { app: 'app', md5user: 'md5pass', postgres: 'postgres', trustuser: '' },
      maxClientConn: o.idleConnections + 100,
    });
    services.push(bouncer);
    targets.set('pgbouncer', { port: bouncer.port, pid: bouncer.pid, service: bouncer });

    const proxies: { name: TargetName; audit: AuditStatements; cli?: string }[] = [
      { name: 'dbguard', audit: 'All' },
      { name: 'dbguard-audit-none', audit: 'None' },
    ];
    if (o.baselineCli) proxies.push({ name: 'dbguard-baseline', audit: 'All', cli: o.baselineCli });
    for (const { name, audit, cli } of proxies) {
      o.log(`starting ${name} (${cli ?? 'dbguard proxy process'}, audit statements: ${audit}) ...`);
      const { service, auditFile } = await startDbguard(
        name,
        pg,
        dir,
        audit,
        name === 'dbguard' ? o.cpuProfDir : undefined,
        cli,
      );
      services.push(service);
      targets.set(name, { port: service.port, pid: service.pid, service });
      auditFiles.set(name, auditFile);
    }

    o.log('starting the bare Node pipe ...');
    const pipePort = await freePort();
    const pipe = await startService(
      'node-pipe',
      process.execPath,
      [PIPE, String(pipePort), String(pg.port)],
      pipePort,
    );
    services.push(pipe);
    targets.set('node-pipe', { port: pipe.port, pid: pipe.pid, service: pipe });
    return { pg, dir, targets, auditFiles, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * The SQL the proxy sends upstream for `sql` as the bench's masked subject (trustuser), from
 * `dbguard check` with the catalog of the bench database.
 */
export function maskedRewrite(policyFile: string, pgPort: number, sql: string): string {
  const out = execFileSync(
    process.execPath,
    [
      CLI,
      'check',
      '--policy-file',
      policyFile,
      '--as',
      'dbuser:trustuser',
      '--upstream',
      `postgres://trustuser@127.0.0.1:${pgPort}/app`,
      sql,
    ],
    { encoding: 'utf8' },
  );
  const decision = JSON.parse(out) as { decision: string; rewrittenSql?: string };
  if (decision.decision !== 'mask' || !decision.rewrittenSql)
    throw new Error(`dbguard check did not mask ${sql}: ${out}`);
  return decision.rewrittenSql;
}
