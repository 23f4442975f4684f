/**
 * The soak run (issue #10): many concurrent clients through one governed proxy with a mixed workload
 * (plain reads, masked reads, writes, denied statements, COPY in and out, cancels) for a set time.
 * It passes when: no unexpected error; RSS after warm-up grows by at most `maxRssGrowth`; no file
 * descriptor, proxy session or server backend is left once the clients are gone; and the audit
 * trail holds exactly one query event per statement the clients ran.
 *
 * The proxy runs in this process together with the load generator, so the RSS and descriptor
 * figures cover both: a leak in either shows.
 */
import { Writable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import pg from 'pg';
import postgres from 'postgres';
import {
  compilePolicy,
  fdTargets,
  type GovernedProxy,
  memoryLogger,
  openFds,
  reliabilityPolicyYaml,
  reliabilitySchemaSql,
  rssMb,
  sleep,
  startGovernedProxy,
  until,
} from './support.js';

export interface SoakOptions {
  /** the PostgreSQL server behind the proxy; `admin` must be a superuser */
  upstream: { host: string; port: number };
  admin: { user: string; password: string };
  clients: number;
  durationMs: number;
  /**
   * measured RSS growth starts after this and once every client ran 3 statements (caches, pools and
   * the V8 heap fill up first); default 40% of the duration, at least 3 s
   */
  warmupMs?: number;
  /** allowed RSS growth after warm-up, as a fraction; default 0.10 */
  maxRssGrowth?: number;
  /** clients connecting at once (SCRAM costs CPU); default 25 */
  connectConcurrency?: number;
  progress?: (line: string) => void;
}

type Op = 'read' | 'masked' | 'write' | 'denied' | 'copyIn' | 'copyOut' | 'cancel';

export interface SoakResult {
  ok: boolean;
  failures: string[];
  clients: number;
  durationMs: number;
  statements: number;
  byOp: Record<Op, number>;
  /** cancels that arrived before their statement ran (ignored by PostgreSQL, statement completed) */
  cancelMissed: number;
  unexpectedErrors: number;
  unexpectedSamples: string[];
  statementsPerSecond: number;
  /** after warm-up (0: warm-up never ended, the run was too short), peak after it, at the end */
  rss: { afterWarmupMb: number; maxAfterWarmupMb: number; endMb: number; growth: number };
  fds: { before: number; peak: number; after: number };
  auditQueryEvents: number;
  auditSessions: { start: number; end: number };
  proxyErrorLines: number;
  leftoverSessions: number;
  leftoverBackends: number;
}

/** Full GC when possible, so that RSS samples compare live memory, not garbage. */
function gc(): void {
  try {
    v8.setFlagsFromString('--expose-gc');
    (vm.runInNewContext('gc') as () => void)();
  } catch {
    /* not available: samples carry some garbage */
  }
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const say = opts.progress ?? (() => {});
  const schema = `soak_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;
  const warmupMs = opts.warmupMs ?? Math.max(3000, Math.round(opts.durationMs * 0.4));
  const maxGrowth = opts.maxRssGrowth ?? 0.1;
  const su = new pg.Client({
    host: opts.upstream.host,
    port: opts.upstream.port,
    ...opts.admin,
    database: 'app',
  });
  await su.connect();
  await su.query(reliabilitySchemaSql(schema, 1000));

  const log = memoryLogger();
  let gp: GovernedProxy | undefined;
  const failures: string[] = [];
  try {
    gp = await startGovernedProxy({
      policy: compilePolicy(reliabilityPolicyYaml({ schema, upstreamPort: opts.upstream.port })),
      upstream: { ...opts.upstream, sslmode: 'disable' },
      logger: log,
    });
    const port = gp.proxy.port;
    const fdsBefore = openFds();
    const fdMapBefore = fdTargets();
    let fdsPeak = fdsBefore;

    // --- clients: most are node-postgres, every tenth is postgres.js (COPY streams and cancels)
    const byOp: Record<Op, number> = {
      read: 0,
      masked: 0,
      write: 0,
      denied: 0,
      copyIn: 0,
      copyOut: 0,
      cancel: 0,
    };
    let statements = 0;
    let unexpected = 0;
    let cancelMissed = 0;
    const samples: string[] = [];
    const oops = (op: string, err: unknown) => {
      unexpected++;
      if (samples.length < 10)
        samples.push(`${op}: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`);
    };
    let stop = false;
    const deadline = () => stop;

    const pgWorker = async (c: pg.Client, i: number) => {
      let n = i;
      while (!deadline()) {
        n++;
        const id = 1 + (n % 1000);
        const pick = n % 10;
        try {
          if (pick < 4) {
            const r = await c.query(`SELECT id, name FROM ${schema}.customers WHERE id = $1`, [id]);
            if (r.rows[0]?.name !== `name${id}`) throw new Error(`wrong row ${JSON.stringify(r.rows[0])}`);
            byOp.read++;
          } else if (pick < 7) {
            const r = await c.query(
              `SELECT email, ssn, customer_ref FROM ${schema}.customers WHERE id = $1`,
              [id],
            );
            const row = r.rows[0];
            if (
              row?.email !== 'u***@example.org' ||
              row.ssn !== '****' ||
              !/^[0-9a-f]{64}$/.test(row.customer_ref)
            )
              throw new Error(`not masked: ${JSON.stringify(row)}`);
            byOp.masked++;
          } else if (pick < 9) {
            await c.query(`INSERT INTO ${schema}.events (client, payload) VALUES ($1, $2)`, [i, `p${n}`]);
            byOp.write++;
          } else {
            try {
              await c.query(`DELETE FROM ${schema}.events`);
              throw new Error('a DELETE without WHERE was not denied');
            } catch (err) {
              if ((err as { code?: string }).code !== '42501') throw err;
            }
            byOp.denied++;
          }
          statements++;
        } catch (err) {
          statements++; // answered, but not as expected
          oops(`pg#${i}`, err);
          await sleep(50);
        }
      }
    };

    /** postgres.js clients: COPY in and out (`role` copy), or statements cancelled while they run. */
    const pgjsWorker = async (sql: postgres.Sql, i: number, role: 'copy' | 'cancel') => {
      let n = i;
      while (!deadline()) {
        n++;
        try {
          if (role === 'copy' && n % 2 === 0) {
            const q = sql.unsafe(`COPY ${schema}.events (client, payload) FROM STDIN`);
            const w = await q.writable();
            await Promise.all([
              q,
              new Promise<void>((resolve, reject) => {
                w.on('error', reject);
                w.on('finish', resolve);
                for (let k = 0; k < 20; k++) w.write(`${i}\tcopy${n}_${k}\n`);
                w.end();
              }),
            ]);
            byOp.copyIn++;
          } else if (role === 'copy') {
            const q = sql.unsafe(`COPY (SELECT id, email FROM ${schema}.customers WHERE id <= 50) TO STDOUT`);
            const r = await q.readable();
            let text = '';
            await Promise.all([
              q,
              new Promise<void>((resolve, reject) => {
                r.on('error', reject);
                r.pipe(
                  new Writable({
                    write(chunk, _enc, cb) {
                      text += chunk.toString();
                      cb();
                    },
                  }),
                )
                  .on('finish', resolve)
                  .on('error', reject);
              }),
            ]);
            const lines = text.trim().split('\n');
            if (lines.length !== 50 || !lines.every((l) => l.endsWith('u***@example.org')))
              throw new Error(`COPY out not masked or incomplete (${lines.length} lines)`);
            byOp.copyOut++;
          } else {
            // A cancel may reach the server before its statement starts (PostgreSQL then ignores it)
            // or, late, hit the next one: this client runs only these statements, so either way the
            // outcome is a 57014 or a completed sleep, both expected.
            const q = sql`SELECT pg_sleep(3)`;
            const t = setTimeout(() => void q.cancel(), 200);
            try {
              await q;
              cancelMissed++;
            } catch (err) {
              if ((err as { code?: string }).code !== '57014') throw err;
              byOp.cancel++;
            } finally {
              clearTimeout(t);
            }
          }
          statements++;
        } catch (err) {
          statements++;
          oops(`pgjs#${i}`, err);
          await sleep(50);
        }
      }
    };

    say(`connecting ${opts.clients} clients to the proxy on port ${port}`);
    const conns: ({ kind: 'pg'; c: pg.Client } | { kind: 'pgjs'; sql: postgres.Sql })[] = [];
    const conc = opts.connectConcurrency ?? 25;
    for (let start = 0; start < opts.clients; start += conc) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(conc, opts.clients - start) }, async (_, k) => {
          const i = start + k;
          if (i % 10 === 9) {
            const sql = postgres({
              host: '127.0.0.1',
              port,
              user: 'app',
              password: 'app',
              database: 'app',
              max: 1,
              fetch_types: false,
              onnotice: () => {},
            });
            await sql`SELECT 1`; // connect now; this statement is counted too
            statements++;
            return { kind: 'pgjs' as const, sql };
          }
          const c = new pg.Client({ host: '127.0.0.1', port, user: 'app', password: 'app', database: 'app' });
          c.on('error', (err) => oops(`pg#${i} socket`, err));
          await c.connect();
          return { kind: 'pg' as const, c };
        }),
      );
      conns.push(...batch);
    }
    say(
      `${conns.length} clients connected; ${gp.proxy.activeSessions} proxy sessions; running ${opts.durationMs} ms`,
    );

    const t0 = Date.now();
    const workers = conns.map((x, i) =>
      x.kind === 'pg' ? pgWorker(x.c, i) : pgjsWorker(x.sql, i, i % 20 === 9 ? 'copy' : 'cancel'),
    );
    let rssWarm = 0;
    let rssMax = 0;
    const ticker = (async () => {
      let lastStatements = 0;
      while (Date.now() - t0 < opts.durationMs) {
        await sleep(Math.min(1000, opts.durationMs / 10));
        const el = Date.now() - t0;
        fdsPeak = Math.max(fdsPeak, openFds());
        if (el >= warmupMs && statements >= conns.length * 3) {
          if (!rssWarm) {
            gc();
            rssWarm = rssMb();
          }
          rssMax = Math.max(rssMax, rssMb());
        }
        if (el % 5000 < 1000 || el >= opts.durationMs) {
          say(
            `t=${(el / 1000).toFixed(0)}s statements=${statements} (+${statements - lastStatements}) rss=${rssMb().toFixed(0)}MiB fds=${openFds()} unexpected=${unexpected}`,
          );
          lastStatements = statements;
        }
      }
    })();
    await ticker;
    stop = true;
    await Promise.all(workers);
    const elapsed = Date.now() - t0;
    gc();
    const rssEnd = rssMb();
    // Garbage between samples can push one sample up; the end figure after a full GC is the one judged.
    const growth = rssWarm ? (rssEnd - rssWarm) / rssWarm : 0;

    say('closing clients');
    await Promise.all(
      conns.map((x) => (x.kind === 'pg' ? x.c.end().catch(() => {}) : x.sql.end({ timeout: 5 }))),
    );
    await until('proxy sessions closed', () => gp!.proxy.activeSessions === 0, 15_000).catch(() => undefined);
    const leftoverSessions = gp.proxy.activeSessions;
    // A connection still in its start-up phase is bounded by the proxy's login timeout (60 s): wait
    // past it, so that what remains is a leak and not a slow close.
    await until('descriptors released', () => openFds() <= fdsBefore + 2, 75_000, 500).catch(() => undefined);
    const fdsAfter = openFds();
    const leftoverBackends = Number(
      (
        await su.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' AND query NOT LIKE '%soak-check%'`,
        )
      ).rows[0].n,
    );

    const events = await gp.auditEvents();
    const queryEvents = events.filter((e) => e.event === 'query').length;
    const sessionStart = events.filter((e) => e.event === 'session.start').length;
    const sessionEnd = events.filter((e) => e.event === 'session.end').length;
    const proxyErrorLines = log.lines.filter((l) => l.level === 'error').length;

    if (unexpected > 0) failures.push(`${unexpected} unexpected errors (${samples.slice(0, 3).join(' | ')})`);
    if (!rssWarm) failures.push('the run ended before warm-up did: make it longer');
    if (growth > maxGrowth)
      failures.push(
        `RSS grew ${(growth * 100).toFixed(1)}% after warm-up (limit ${(maxGrowth * 100).toFixed(0)}%)`,
      );
    if (fdsAfter > fdsBefore + 2) {
      const extra = [...fdTargets()]
        .filter(([fd, t]) => fdMapBefore.get(fd) !== t)
        .map(([fd, t]) => `${fd}→${t}`);
      failures.push(
        `file descriptors: ${fdsBefore} before, ${fdsAfter} after (new: ${extra.slice(0, 12).join(', ')})`,
      );
    }
    if (leftoverSessions) failures.push(`${leftoverSessions} proxy sessions left`);
    if (leftoverBackends) failures.push(`${leftoverBackends} server backends left`);
    if (queryEvents !== statements)
      failures.push(`audit: ${queryEvents} query events for ${statements} statements`);
    if (sessionStart !== conns.length || sessionEnd !== conns.length)
      failures.push(
        `audit: ${sessionStart} session.start / ${sessionEnd} session.end for ${conns.length} sessions`,
      );
    if (proxyErrorLines) failures.push(`${proxyErrorLines} error lines in the proxy log`);

    return {
      ok: failures.length === 0,
      failures,
      clients: conns.length,
      durationMs: elapsed,
      statements,
      byOp,
      cancelMissed,
      unexpectedErrors: unexpected,
      unexpectedSamples: samples,
      statementsPerSecond: Math.round((statements / elapsed) * 1000),
      rss: {
        afterWarmupMb: round(rssWarm),
        maxAfterWarmupMb: round(rssMax),
        endMb: round(rssEnd),
        growth: round(growth, 3),
      },
      fds: { before: fdsBefore, peak: fdsPeak, after: fdsAfter },
      auditQueryEvents: queryEvents,
      auditSessions: { start: sessionStart, end: sessionEnd },
      proxyErrorLines,
      leftoverSessions,
      leftoverBackends,
    };
  } finally {
    await gp?.close();
    await su.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await su.end();
  }
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
