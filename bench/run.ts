/**
 * `npm run bench` (`node dist/bench/run.js [flags]`): dbguard side by side with a direct
 * connection, pgbouncer and a bare Node pipe, in one run on this machine. Starts everything it
 * measures, alternates the targets round by round so drift cancels out, prints progress, then the
 * tables and whether each target of issue #9 holds. `--help` lists the flags.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type BenchEnv, maskedRewrite, startDbguard, startEnv, type TargetName } from './env.js';
import { bigSelect, type IdleResult, idleConnections, type SelectResult } from './measure.js';
import { type PgbenchMode, type PgbenchResult, runPgbench } from './pgbench.js';
import { measurePolicyCost, type PolicyCost } from './policy-bench.js';
import { cpuMsOf, rssOf } from './procs.js';
import { fmt, kib, median, mib, table } from './stats.js';
import { WireClient } from './wire-client.js';

interface Options {
  seconds: number;
  rounds: number;
  clients: number[];
  modes: PgbenchMode[];
  targets: TargetName[];
  maskedRows: number;
  selectRounds: number;
  idle: number;
  scale: number;
  skip: Set<string>;
  json?: string;
  report?: string;
  cpuProf?: string;
  /** --baseline DIR: DIR/dist/cli/main.js, another build measured as target dbguard-baseline */
  baselineCli?: string;
}

const ALL_TARGETS: TargetName[] = ['direct', 'pgbouncer', 'dbguard', 'dbguard-audit-none', 'node-pipe'];
const SECTIONS = ['pgbench', 'select', 'idle', 'policy'];

const HELP = `usage: node dist/bench/run.js [flags]

  --seconds N        pgbench duration per run (default 5)
  --rounds N         rounds; every target runs once per round, in rotated order (default 3)
  --clients LIST     pgbench client counts (default 1,8)
  --modes LIST       pgbench protocols: simple,extended,prepared (default all three)
  --targets LIST     ${ALL_TARGETS.join(',')} (default all)
  --masked-rows N    rows in the masked table (default 1000000)
  --select-rounds N  rounds of the large SELECT (default 3)
  --idle N           idle connections for the memory figure (default 2000)
  --scale N          pgbench scale factor (default 1)
  --skip LIST        sections to leave out: ${SECTIONS.join(',')}
  --quick            2 s runs, 1 round, 200,000 masked rows, 500 idle connections (a smoke run)
  --json FILE        write every figure as JSON
  --report FILE      write the report (Markdown) to FILE as well
  --cpu-prof DIR     run the dbguard proxy under node --cpu-prof, profiles in DIR
  --baseline DIR     also measure the dbguard built in DIR (DIR/dist/cli/main.js) as target
                     dbguard-baseline, e.g. a git worktree of an older commit after npm run build
`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    seconds: 5,
    rounds: 3,
    clients: [1, 8],
    modes: ['simple', 'extended', 'prepared'],
    targets: [...ALL_TARGETS],
    maskedRows: 1_000_000,
    selectRounds: 3,
    idle: 2000,
    scale: 1,
    skip: new Set(),
  };
  const int = (flag: string, v: string | undefined, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`${flag}: expected an integer ${min}..${max}, got '${v}'`);
    return n;
  };
  const list = <T extends string>(flag: string, v: string | undefined, allowed: readonly T[]): T[] => {
    const items = (v ?? '').split(',').filter(Boolean);
    for (const i of items)
      if (!allowed.includes(i as T)) throw new Error(`${flag}: '${i}' is not one of ${allowed.join(', ')}`);
    if (!items.length) throw new Error(`${flag}: empty list`);
    return items as T[];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--seconds':
        o.seconds = int(a, v(), 1, 3600);
        break;
      case '--rounds':
        o.rounds = int(a, v(), 1, 100);
        break;
      case '--clients':
        o.clients = (v() ?? '').split(',').map((c) => int(a, c, 1, 200));
        break;
      case '--modes':
        o.modes = list(a, v(), ['simple', 'extended', 'prepared'] as const);
        break;
      case '--targets':
        o.targets = list(a, v(), ALL_TARGETS);
        break;
      case '--masked-rows':
        o.maskedRows = int(a, v(), 1, 50_000_000);
        break;
      case '--select-rounds':
        o.selectRounds = int(a, v(), 1, 100);
        break;
      case '--idle':
        o.idle = int(a, v(), 1, 20_000);
        break;
      case '--scale':
        o.scale = int(a, v(), 1, 1000);
        break;
      case '--skip':
        o.skip = new Set(list(a, v(), SECTIONS));
        break;
      case '--quick':
        Object.assign(o, { seconds: 2, rounds: 1, maskedRows: 200_000, selectRounds: 1, idle: 500 });
        break;
      case '--json':
        o.json = v();
        break;
      case '--report':
        o.report = v();
        break;
      case '--cpu-prof':
        o.cpuProf = v();
        break;
      case '--baseline': {
        const cli = path.resolve(v() ?? '', 'dist/cli/main.js');
        if (!fs.existsSync(cli)) throw new Error(`--baseline: ${cli} not found (build that tree first)`);
        o.baselineCli = cli;
        break;
      }
      case '--help':
      case '-h':
        process.stdout.write(HELP);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown flag ${a} (see --help)`);
    }
  }
  if (!o.targets.includes('direct')) o.targets.unshift('direct'); // every ratio needs it
  if (o.baselineCli && !o.targets.includes('dbguard-baseline')) o.targets.push('dbguard-baseline');
  return o;
}

const progress = (line: string) => process.stderr.write(`${line}\n`);

interface Cell {
  mode: PgbenchMode;
  clients: number;
  target: TargetName;
  runs: PgbenchResult[];
  /** CPU time the target process used per transaction, µs (proxies only) */
  cpuUs: number[];
}

async function pgbenchMatrix(env: BenchEnv, o: Options): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const mode of o.modes)
    for (const clients of o.clients)
      for (const target of o.targets) cells.push({ mode, clients, target, runs: [], cpuUs: [] });
  const total = cells.length * o.rounds;
  let done = 0;
  const started = Date.now();
  for (let r = 0; r < o.rounds; r++) {
    for (const mode of o.modes) {
      for (const clients of o.clients) {
        const group = cells.filter((c) => c.mode === mode && c.clients === clients);
        for (let k = 0; k < group.length; k++) {
          const cell = group[(k + r) % group.length]!;
          const pid = env.targets.get(cell.target)!.pid;
          const cpu0 = pid ? cpuMsOf(pid) : 0;
          const res = await runPgbench({
            port: env.targets.get(cell.target)!.port,
            mode,
            clients,
            seconds: o.seconds,
            user: 'app',
            password: 'app',
            database: 'app',
            bindir: env.pg.bindir,
          });
          cell.runs.push(res);
          if (pid) cell.cpuUs.push(((cpuMsOf(pid) - cpu0) * 1000) / Math.max(1, res.transactions));
          done++;
          const eta = ((Date.now() - started) / done) * (total - done);
          progress(
            `[${done}/${total}, ~${Math.ceil(eta / 1000)} s left] round ${r + 1} ${mode} c=${clients} ${cell.target}: ` +
              `${fmt(res.tps)} tps, p50 ${fmt(res.p50, 3)} ms, p99 ${fmt(res.p99, 3)} ms` +
              (pid ? `, ${fmt(cell.cpuUs[cell.cpuUs.length - 1]!)} µs CPU/tx` : ''),
          );
        }
      }
    }
  }
  return cells;
}

interface Summary {
  tps: number;
  p50: number;
  p99: number;
  cpuUs: number;
}

function summarize(c: Cell): Summary {
  return {
    tps: median(c.runs.map((r) => r.tps)),
    p50: median(c.runs.map((r) => r.p50)),
    p99: median(c.runs.map((r) => r.p99)),
    cpuUs: median(c.cpuUs),
  };
}

interface Check {
  target: string;
  value: string;
  ok: boolean;
}

function pgbenchReport(cells: Cell[], o: Options, checks: Check[]): string {
  const out: string[] = [];
  const get = (mode: PgbenchMode, clients: number, t: TargetName) => {
    const c = cells.find((x) => x.mode === mode && x.clients === clients && x.target === t);
    return c ? summarize(c) : undefined;
  };
  const rows: (string | number)[][] = [];
  for (const mode of o.modes) {
    for (const clients of o.clients) {
      const direct = get(mode, clients, 'direct')!;
      const bouncer = get(mode, clients, 'pgbouncer');
      for (const t of o.targets) {
        const s = get(mode, clients, t)!;
        rows.push([
          `${mode} c=${clients} ${t}`,
          fmt(s.tps),
          fmt(s.p50, 3),
          fmt(s.p99, 3),
          t === 'direct' ? '-' : fmt(s.p50 - direct.p50, 3),
          bouncer && t !== 'pgbouncer' && t !== 'direct' ? fmt(s.tps / bouncer.tps, 2) : '-',
          t === 'direct' ? '-' : fmt(s.tps / direct.tps, 2),
          fmt(s.cpuUs, 1),
        ]);
      }
    }
  }
  out.push(
    table(
      [
        'pgbench -S',
        'TPS',
        'p50 ms',
        'p99 ms',
        'added p50 ms',
        '× pgbouncer TPS',
        '× direct TPS',
        'proxy CPU µs/tx',
      ],
      rows,
    ),
  );
  // the targets of issue #9
  if (o.targets.includes('pgbouncer') && o.targets.includes('dbguard')) {
    for (const [mode, min] of [
      ['prepared', 0.85],
      ['simple', 0.7],
    ] as const) {
      if (!o.modes.includes(mode)) continue;
      for (const clients of o.clients) {
        const ratio = get(mode, clients, 'dbguard')!.tps / get(mode, clients, 'pgbouncer')!.tps;
        checks.push({
          target: `${mode} c=${clients}: dbguard TPS ≥ ${min} × pgbouncer`,
          value: fmt(ratio, 2),
          ok: ratio >= min,
        });
      }
    }
    if (o.clients.includes(1)) {
      for (const mode of o.modes) {
        const d = get(mode, 1, 'direct')!.p50;
        const added = get(mode, 1, 'dbguard')!.p50 - d;
        const bouncerAdded = get(mode, 1, 'pgbouncer')!.p50 - d;
        checks.push({
          target: `${mode} c=1: added p50 latency ≤ 1.5 × pgbouncer's`,
          value: `${fmt(added * 1000)} µs vs ${fmt(bouncerAdded * 1000)} µs (${fmt(added / bouncerAdded, 2)}×)`,
          ok: added <= 1.5 * bouncerAdded,
        });
      }
    }
  }
  if (o.targets.includes('dbguard-audit-none') && o.targets.includes('dbguard')) {
    const rowsA: (string | number)[][] = [];
    for (const mode of o.modes)
      for (const clients of o.clients) {
        const all = get(mode, clients, 'dbguard')!;
        const none = get(mode, clients, 'dbguard-audit-none')!;
        rowsA.push([
          `${mode} c=${clients}`,
          fmt(none.tps),
          fmt(all.tps),
          fmt((1 - all.tps / none.tps) * 100, 1),
        ]);
      }
    out.push('', 'Audit trail cost (the same proxy and policy, `audit.statements` None against All):', '');
    out.push(table(['pgbench -S', 'TPS audit None', 'TPS audit All', 'cost %'], rowsA));
  }
  if (o.targets.includes('dbguard-baseline') && o.targets.includes('dbguard')) {
    const rowsB: (string | number)[][] = [];
    for (const mode of o.modes)
      for (const clients of o.clients) {
        const now = get(mode, clients, 'dbguard')!;
        const base = get(mode, clients, 'dbguard-baseline')!;
        rowsB.push([
          `${mode} c=${clients}`,
          fmt(base.tps),
          fmt(now.tps),
          fmt(now.tps / base.tps, 2),
          fmt(base.cpuUs, 1),
          fmt(now.cpuUs, 1),
        ]);
      }
    out.push('', `This build against the baseline build (${o.baselineCli}), same policy, audit All:`, '');
    out.push(
      table(
        [
          'pgbench -S',
          'TPS baseline',
          'TPS this build',
          '× baseline',
          'CPU µs/tx baseline',
          'CPU µs/tx this build',
        ],
        rowsB,
      ),
    );
  }
  return out.join('\n');
}

function selectReport(results: SelectResult[], checks: Check[]): string {
  const direct = results.find((r) => r.label === 'direct (unmasked)')!;
  const rows = results.map((r) => [
    r.label,
    r.rows,
    fmt(r.ms),
    fmt(r.rowsPerSec),
    fmt(r.mbPerSec, 1),
    fmt(r.rowsPerSec / direct.rowsPerSec, 2),
    r.peakRss !== undefined ? mib(r.peakRss) : '-',
    r.proxyCpuMs !== undefined ? fmt(r.proxyCpuMs) : '-',
  ]);
  const masked = results.find((r) => r.label === 'dbguard (masked)');
  const rewrite = results.find((r) => r.label === 'direct (masked rewrite)');
  if (masked && rewrite) {
    const ratio = masked.rowsPerSec / rewrite.rowsPerSec;
    checks.push({
      target: '(floor) masked SELECT through dbguard ÷ its rewrite run directly',
      value: fmt(ratio, 2),
      ok: ratio >= 0.8,
    });
  }
  if (masked) {
    const ratio = masked.rowsPerSec / direct.rowsPerSec;
    checks.push({
      target: 'masked SELECT: ≥ 0.8 × direct throughput',
      value: fmt(ratio, 2),
      ok: ratio >= 0.8,
    });
    checks.push({
      target: 'masked SELECT: proxy peak RSS < 150 MB',
      value: `${mib(masked.peakRss ?? Number.NaN)} MiB`,
      ok: (masked.peakRss ?? Number.POSITIVE_INFINITY) < 150 * 1024 * 1024,
    });
  }
  return table(
    [
      'SELECT * FROM customers',
      'rows',
      'ms',
      'rows/s',
      'MiB/s',
      '× direct',
      'proxy peak RSS MiB',
      'proxy CPU ms',
    ],
    rows,
  );
}

function idleReport(results: IdleResult[], checks: Check[]): string {
  for (const r of results) {
    if (r.label === 'dbguard') {
      checks.push({
        target: 'idle connection: ≤ 64 KiB RSS each',
        value: `${kib(r.perConnection)} KiB`,
        ok: r.perConnection <= 64 * 1024 && !r.error,
      });
    }
  }
  return table(
    [
      'idle connections',
      'open',
      'RSS before MiB',
      'RSS after MiB',
      'KiB per connection',
      'open time s',
      'error',
    ],
    results.map((r) => [
      r.label,
      r.connections,
      mib(r.rssBefore),
      mib(r.rssAfter),
      kib(r.perConnection),
      fmt(r.openMs / 1000, 1),
      r.error ?? '',
    ]),
  );
}

function policyReport(p: PolicyCost): string {
  const rows = p.statements.map((s) => [
    s.label,
    fmt(s.parse, 1),
    fmt(s.judge, 1),
    fmt(s.judgeMasked, 1),
    fmt(s.cached, 2),
  ]);
  return [
    table(
      ['decision cost, µs per statement', 'parse', 'miss (exempt)', 'miss (masked)', 'hit (cache)'],
      rows,
    ),
    '',
    `- cache over a workload (50 texts × 20 rounds): ${fmt(p.workload.usPerLookup, 2)} µs per lookup, ` +
      `${p.workload.hits} hits, ${p.workload.misses} misses`,
    `- ${p.compile.rules} rules (${p.compile.policies} DatabasePolicies; the schema allows 256 per policy): ` +
      `load + validate + compile ${fmt(p.compile.ms, 1)} ms ` +
      `(median of ${p.compile.repeats}); judging against all of them as one rule list (miss, masked subject) ${fmt(p.judgeManyRules, 1)} µs`,
  ].join('\n');
}

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const needServer = ['pgbench', 'select', 'idle'].some((s) => !o.skip.has(s));
  let env: BenchEnv | undefined;
  const onSignal = () => {
    progress('interrupted: stopping the servers ...');
    void (env?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const json: Record<string, unknown> = { options: { ...o, skip: [...o.skip] } };
  const sections: string[] = [];
  const checks: Check[] = [];
  const t0 = Date.now();
  try {
    if (needServer) {
      env = await startEnv({
        log: progress,
        maskedRows: o.maskedRows,
        scale: o.scale,
        idleConnections: o.skip.has('idle') ? 0 : o.idle,
        cpuProfDir: o.cpuProf,
        baselineCli: o.baselineCli,
      });
    }
    if (!o.skip.has('pgbench')) {
      progress(
        `pgbench -S: ${o.modes.length} modes × ${o.clients.length} client counts × ${o.targets.length} targets × ${o.rounds} rounds of ${o.seconds} s`,
      );
      const cells = await pgbenchMatrix(env!, o);
      json.pgbench = cells;
      sections.push(
        `## pgbench -S (medians of ${o.rounds} rounds of ${o.seconds} s, scale ${o.scale})\n\n${pgbenchReport(cells, o, checks)}`,
      );
    }
    if (!o.skip.has('select')) {
      progress(`large SELECT: ${o.maskedRows} rows, ${o.selectRounds} rounds`);
      const e = env!;
      const login = (port: number, user: string, password?: string) => ({
        host: '127.0.0.1',
        port,
        user,
        database: 'app',
        ...(password ? { password } : {}),
      });
      // A fresh proxy process: the pgbench rounds leave the long-lived one's decision cache full of
      // distinct statement texts, which would be charged to this query's peak RSS.
      const fresh = await startDbguard('dbguard-select', e.pg, e.dir, 'All');
      const dbg = { port: fresh.service.port, pid: fresh.service.pid };
      const warm = await WireClient.connect(login(dbg.port, 'trustuser'));
      await warm.query('SELECT * FROM customers LIMIT 10').finally(() => warm.close());
      // What the server itself costs to compute the masks: the proxy's rewrite, run directly.
      const rewrite = maskedRewrite(fresh.policyFile, e.pg.port, 'SELECT * FROM customers');
      const results = await bigSelect(
        [
          { label: 'direct (unmasked)', login: login(e.pg.port, 'trustuser') },
          { label: 'direct (masked rewrite)', login: login(e.pg.port, 'trustuser'), sql: rewrite },
          { label: 'dbguard (masked)', login: login(dbg.port, 'trustuser'), pid: dbg.pid! },
          {
            label: 'dbguard (exempt, unmasked)',
            login: login(dbg.port, 'md5user', 'md5pass'),
            pid: dbg.pid!,
          },
          ...(e.targets.has('node-pipe')
            ? [
                {
                  label: 'node-pipe (unmasked)',
                  login: login(e.targets.get('node-pipe')!.port, 'trustuser'),
                  pid: e.targets.get('node-pipe')!.pid!,
                },
              ]
            : []),
        ],
        'SELECT * FROM customers',
        o.selectRounds,
        progress,
        cpuMsOf,
      ).finally(() => fresh.service.stop());
      json.select = results;
      const worn = e.targets.get('dbguard')?.pid;
      const wornNote = worn
        ? `\n\nRSS of the dbguard process that served the pgbench rounds: ${mib(rssOf(worn))} MiB ` +
          '(its decision cache holds up to 20,000 decisions, one per distinct statement text).'
        : '';
      sections.push(
        `## A ${o.maskedRows}-row SELECT (median of ${o.selectRounds} rounds, fresh proxy process)\n\n${selectReport(results, checks)}${wornNote}`,
      );
    }
    if (!o.skip.has('idle')) {
      const e = env!;
      const results: IdleResult[] = [];
      for (const name of ['dbguard', 'node-pipe', 'pgbouncer'] as const) {
        const t = e.targets.get(name);
        if (!t?.pid) continue;
        progress(`idle connections: ${o.idle} through ${name}`);
        results.push(
          await idleConnections(
            name,
            t.pid,
            { host: '127.0.0.1', port: t.port, user: 'trustuser', database: 'app' },
            o.idle,
            progress,
          ),
        );
        await new Promise((r) => setTimeout(r, 10_000)); // the server's backends exit
      }
      json.idle = results;
      sections.push(`## ${o.idle} idle connections\n\n${idleReport(results, checks)}`);
    }
  } finally {
    if (env) {
      progress('stopping the servers ...');
      await env.stop();
      env = undefined;
    }
  }
  // in process, CPU only: after the servers are gone, so nothing competes with it
  if (!o.skip.has('policy')) {
    progress('policy engine: decision cost and compile time ...');
    const p = await measurePolicyCost(2000, 1000);
    json.policy = p;
    sections.push(`## Policy engine (in process)\n\n${policyReport(p)}`);
  }
  const summary = table(
    ['target (issue #9)', 'measured', 'holds'],
    checks.map((c) => [c.target, c.value, c.ok ? 'yes' : 'NO']),
  );
  json.checks = checks;
  const report = [
    `# dbguard benchmark`,
    '',
    `${new Date().toISOString()}, node ${process.version}, ${(await import('node:os')).cpus().length} CPUs, ` +
      `${Math.round((Date.now() - t0) / 1000)} s`,
    '',
    ...sections.flatMap((s) => [s, '']),
    '## Targets',
    '',
    summary,
    '',
  ].join('\n');
  process.stdout.write(report);
  if (o.report) fs.writeFileSync(o.report, report);
  if (o.json) fs.writeFileSync(o.json, `${JSON.stringify(json, null, 2)}\n`);
}

await main();
