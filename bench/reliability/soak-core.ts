/**
 * The soak run (issue #10): many concurrent clients through one governed proxy with a mixed workload
 * (plain reads, masked reads, writes, denied statements, COPY in and out, cancels) for a set time.
 * It passes when: no unexpected error; the proxy's RSS after warm-up does not trend up by more than
 * `maxRssGrowth` (a least-squares line over one sample a second, see trend.ts); no file descriptor,
 * proxy session or server backend is left once the clients are gone; and the audit trail holds
 * exactly one query event per statement the clients ran.
 *
 * By default the proxy is its own process (the built CLI, soak-target.ts), so RSS and descriptors
 * are the proxy's alone; `proxy: 'in-process'` runs it inside this process (figures then cover the
 * load generator too).
 */
import net from 'node:net';
import { Writable } from 'node:stream';
import pg from 'pg';
import postgres from 'postgres';
import { type ProxyMode, startSoakTarget } from './soak-target.js';
import {
  clientEndsOf,
  fdTargets,
  newDescriptors,
  openFds,
  reliabilitySchemaSql,
  rssMb,
  sleep,
  until,
} from './support.js';
import { type RssTrend, rssTrend, type Sample } from './trend.js';

export interface SoakOptions {
  /** the PostgreSQL server behind the proxy; `admin` must be a superuser */
  upstream: { host: string; port: number };
  admin: { user: string; password: string };
  clients: number;
  durationMs: number;
  /** the proxy as its own process (built CLI; default) or inside this process */
  proxy?: ProxyMode;
  /**
   * the RSS trend is fitted from then on, and once every client ran 3 statements (caches, pools and
   * the V8 heap fill up first); default 40% of the duration, at least 3 s
   */
  warmupMs?: number;
  /** allowed RSS growth along the post-warm-up trend line, as a fraction; default 0.10 */
  maxRssGrowth?: number;
  /**
   * growth in MiB that passes whatever its fraction; default 0. For short runs, where the heap of a
   * small proxy is still filling after warm-up and a fraction of a small base says little.
   */
  rssSlackMb?: number;
  /**
   * descriptors of the proxy must be back to their count before the clients within this long after
   * the last client closed; default 10 s
   */
  fdSettleMs?: number;
  /** clients connecting at once (SCRAM costs CPU); default 25 */
  connectConcurrency?: number;
  progress?: (line: string) => void;
}

type Op = 'read' | 'masked' | 'write' | 'denied' | 'copyIn' | 'copyOut' | 'cancel';

export interface SoakResult {
  ok: boolean;
  failures: string[];
  proxy: ProxyMode;
  clients: number;
  durationMs: number;
  statements: number;
  byOp: Record<Op, number>;
  /** cancels that arrived before their statement ran (ignored by PostgreSQL, statement completed) */
  cancelMissed: number;
  unexpectedErrors: number;
  unexpectedSamples: string[];
  statementsPerSecond: number;
  /**
   * the proxy's RSS: the trend line over the post-warm-up samples (undefined: warm-up never ended)
   * and every sample (seconds since the load started, MiB), to plot or refit
   */
  rss: { warmupEndMs: number; trend?: RssTrend; samples: [number, number][] };
  /** RSS of the load generator (only different from the proxy's in process mode), MiB */
  generatorRss: { startMb: number; endMb: number };
  /**
   * the proxy's descriptors: before the clients, peak, when the last client had closed `settleMs`
   * ago, and how long they took to come back to the baseline (-1: not within 75 s)
   */
  fds: {
    before: number;
    peak: number;
    afterSettle: number;
    backToBaselineMs: number;
    extra: string[];
    /** connections to the proxy's port still open then, with the process holding the client end */
    clientEnds: string[];
    /**
     * of those, held by another process than this load generator: connections that are not the
     * soak's (on a shared machine, something else dialled the port); not counted against the proxy
     */
    foreign: number;
  };
  /** the load generator's own descriptors (process mode), before and after its clients closed */
  generatorFds: { before: number; after: number; extra: string[] };
  auditQueryEvents: number;
  auditSessions: { start: number; end: number };
  proxyErrorLines: number;
  leftoverSessions: number;
  leftoverBackends: number;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const say = opts.progress ?? (() => {});
  const mode = opts.proxy ?? 'process';
  const schema = `soak_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;
  const warmupMs = opts.warmupMs ?? Math.max(3000, Math.round(opts.durationMs * 0.4));
  const maxGrowth = opts.maxRssGrowth ?? 0.1;
  const settleMs = opts.fdSettleMs ?? 10_000;
  const su = new pg.Client({
    host: opts.upstream.host,
    port: opts.upstream.port,
    ...opts.admin,
    database: 'app',
  });
  await su.connect();
  await su.query(reliabilitySchemaSql(schema, 1000));

  const failures: string[] = [];
  const target = await startSoakTarget({ mode, schema, upstream: opts.upstream }).catch(async (err) => {
    await su.end();
    throw err;
  });
  try {
    const port = target.port;
    say(`proxy ${mode === 'process' ? `process ${target.pid}` : 'in this process'} on port ${port}`);
    await sleep(500); // let the fresh process finish its start-up allocations
    const fdsBefore = target.fds();
    const fdMapBefore = target.fdTargets();
    let fdsPeak = fdsBefore;
    const genFdsBefore = openFds();
    const genFdMapBefore = fdTargets();
    const genRssStart = rssMb();

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
      `${conns.length} clients connected; ${await target.activeSessions()} proxy sessions; running ${opts.durationMs} ms`,
    );

    const t0 = Date.now();
    const workers = conns.map((x, i) =>
      x.kind === 'pg' ? pgWorker(x.c, i) : pgjsWorker(x.sql, i, i % 20 === 9 ? 'copy' : 'cancel'),
    );
    const rssSamples: Sample[] = [];
    let warmupEndMs = 0;
    const ticker = (async () => {
      let lastStatements = 0;
      while (Date.now() - t0 < opts.durationMs) {
        await sleep(Math.min(1000, opts.durationMs / 10));
        const el = Date.now() - t0;
        const fds = target.fds();
        fdsPeak = Math.max(fdsPeak, fds);
        const mb = target.rssMb();
        rssSamples.push({ t: el, mb });
        if (!warmupEndMs && el >= warmupMs && statements >= conns.length * 3) warmupEndMs = el;
        if (el % 5000 < 1000 || el >= opts.durationMs) {
          say(
            `t=${(el / 1000).toFixed(0)}s statements=${statements} (+${statements - lastStatements}) proxy rss=${mb.toFixed(0)}MiB fds=${fds}${mode === 'process' ? ` generator rss=${rssMb().toFixed(0)}MiB` : ''} unexpected=${unexpected}`,
          );
          lastStatements = statements;
        }
      }
    })();
    await ticker;
    stop = true;
    await Promise.all(workers);
    const elapsed = Date.now() - t0;
    const genRssEnd = rssMb();
    const trend = warmupEndMs ? rssTrend(rssSamples, warmupEndMs) : undefined;

    say('closing clients');
    await Promise.all(
      conns.map((x) => (x.kind === 'pg' ? x.c.end().catch(() => {}) : x.sql.end({ timeout: 5 }))),
    );
    const closedAt = Date.now();
    await until('proxy sessions closed', async () => (await target.activeSessions()) === 0, 15_000).catch(
      () => undefined,
    );
    const leftoverSessions = await target.activeSessions();
    // Descriptors must be back within `settleMs`; the wait goes on to 75 s (past the proxy's 60 s
    // login timeout) to tell a slow close (bounded) from a leak, and what is left at `settleMs` is
    // described on both sides (which connection, which state).
    let backToBaselineMs = -1;
    let afterSettle = -1;
    let extra: string[] = [];
    let genExtra: string[] = [];
    let clientEnds: string[] = [];
    let foreign = 0;
    for (;;) {
      const el = Date.now() - closedAt;
      const n = target.fds();
      if (n <= fdsBefore + 2) {
        backToBaselineMs = el;
        if (afterSettle < 0) afterSettle = n;
        break;
      }
      if (afterSettle < 0 && el >= settleMs) {
        afterSettle = n;
        extra = newDescriptors(target.pid, fdMapBefore);
        genExtra = newDescriptors('self', genFdMapBefore);
        say(`descriptors ${settleMs} ms after the clients closed: ${n} (before: ${fdsBefore})`);
        for (const d of extra) say(`  proxy ${d}`);
        for (const d of genExtra) say(`  generator ${d}`);
        for (const d of socketOwners(port)) say(`  socket ${d}`);
        clientEnds = clientEndsOf(port);
        for (const d of clientEnds) say(`  client end ${d}`);
        // an end with no process (closed, FIN sent) is not foreign: the proxy should have closed too
        foreign = clientEnds.filter((l) => /pid=\d+,/.test(l) && !l.includes(`pid=${process.pid},`)).length;
      }
      if (el > 75_000) break;
      await sleep(250);
    }
    const fdsAfterWait = target.fds();
    const genFdsAfter = openFds();
    if (!genExtra.length && genFdsAfter > genFdsBefore + 2) genExtra = newDescriptors('self', genFdMapBefore);
    const leftoverBackends = Number(
      (
        await su.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' AND query NOT LIKE '%soak-check%'`,
        )
      ).rows[0].n,
    );

    await target.stop(); // flushes and closes the audit trail
    const counts = await target.auditCounts();
    const queryEvents = counts.get('query') ?? 0;
    const sessionStart = counts.get('session.start') ?? 0;
    const sessionEnd = counts.get('session.end') ?? 0;
    const proxyErrorLines = target.errorLines();

    if (unexpected > 0) failures.push(`${unexpected} unexpected errors (${samples.slice(0, 3).join(' | ')})`);
    if (!trend) failures.push('the run ended before warm-up did: make it longer');
    else if (trend.growth > maxGrowth && trend.fitEndMb - trend.fitStartMb > (opts.rssSlackMb ?? 0))
      failures.push(
        `RSS trend grew ${(trend.growth * 100).toFixed(1)}% after warm-up (${trend.fitStartMb.toFixed(0)} → ${trend.fitEndMb.toFixed(0)} MiB; limit ${(maxGrowth * 100).toFixed(0)}%)`,
      );
    const settled =
      (backToBaselineMs >= 0 && backToBaselineMs <= settleMs) || afterSettle - foreign <= fdsBefore + 2;
    if (!settled) {
      failures.push(
        `file descriptors: ${fdsBefore} before, ${afterSettle} ${settleMs} ms after the clients closed, ${fdsAfterWait} after 75 s (new: ${extra.slice(0, 12).join(', ')})`,
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
    if (proxyErrorLines.length)
      failures.push(`${proxyErrorLines.length} error lines in the proxy log: ${proxyErrorLines[0]}`);

    return {
      ok: failures.length === 0,
      failures,
      proxy: mode,
      clients: conns.length,
      durationMs: elapsed,
      statements,
      byOp,
      cancelMissed,
      unexpectedErrors: unexpected,
      unexpectedSamples: samples,
      statementsPerSecond: Math.round((statements / elapsed) * 1000),
      rss: {
        warmupEndMs,
        ...(trend ? { trend: roundTrend(trend) } : {}),
        samples: rssSamples.map((x) => [round(x.t / 1000), round(x.mb)]),
      },
      generatorRss: { startMb: round(genRssStart), endMb: round(genRssEnd) },
      fds: { before: fdsBefore, peak: fdsPeak, afterSettle, backToBaselineMs, extra, clientEnds, foreign },
      generatorFds: { before: genFdsBefore, after: genFdsAfter, extra: genExtra },
      auditQueryEvents: queryEvents,
      auditSessions: { start: sessionStart, end: sessionEnd },
      proxyErrorLines: proxyErrorLines.length,
      leftoverSessions,
      leftoverBackends,
    };
  } finally {
    await target.stop();
    target.removeFiles();
    await su.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await su.end();
  }
}

/**
 * Sockets of this process connected to or accepted on `port`, with the names of their listeners:
 * says which library a socket left open belongs to (postgres.js names its handlers `connected`,
 * `data`, `closed`; node-postgres and the proxy use their own).
 */
function socketOwners(port: number): string[] {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  return handles
    .filter((h): h is net.Socket => h instanceof net.Socket)
    .filter((s) => s.remotePort === port || s.localPort === port)
    .map((s) => {
      const names = (ev: string) =>
        s
          .listeners(ev)
          .map((f) => (f as { name?: string }).name || 'anonymous')
          .join('+');
      const side = s.remotePort === port ? 'client' : 'proxy';
      return `${side} ${s.localPort}->${s.remotePort} read=${s.bytesRead} written=${s.bytesWritten} connecting=${s.connecting} destroyed=${s.destroyed} data:[${names('data')}] close:[${names('close')}] connect:[${names('connect')}] end:[${names('end')}]`;
    });
}

const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

function roundTrend(t: RssTrend): RssTrend {
  return {
    ...t,
    fitStartMb: round(t.fitStartMb),
    fitEndMb: round(t.fitEndMb),
    slopeMbPerMin: round(t.slopeMbPerMin, 2),
    growth: round(t.growth, 4),
    minMb: round(t.minMb),
    medianMb: round(t.medianMb),
    maxMb: round(t.maxMb),
  };
}
