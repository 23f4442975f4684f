/**
 * The audit writer on real files and a real pipe: the chain, `dbguard audit verify` naming the line
 * of an edit, a removal and a reorder, rotation, restart, and backpressure from a pipe nobody reads.
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  constants,
  createReadStream,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../cli/audit.js';
import { GENESIS, lineHash } from '../../sidecar/audit/chain.js';
import { loadAuditParser } from '../../sidecar/audit/statement.js';
import { verifyAuditFiles } from '../../sidecar/audit/verify.js';
import { AuditLogError, openAuditLog } from '../../sidecar/audit/writer.js';
import { SidecarMetrics } from '../../sidecar/metrics.js';
import { until } from '../support/until.js';
import { captureIo, oneOfEach, readLines, sampleQuery, tempDir } from './helpers.js';

const tmp = tempDir('writer');
beforeAll(() => loadAuditParser());
afterAll(() => tmp.cleanup());

let fileNo = 0;
const newPath = (name = 'audit') => join(tmp.dir, `${name}-${++fileNo}.log`);

async function writeLog(path: string, n: number): Promise<void> {
  const log = await openAuditLog(path, { maxBatch: 64 });
  // Concurrent writers, as sessions would be; order in the file is arrival order.
  await Promise.all(Array.from({ length: n }, (_, i) => log.write(sampleQuery(i + 1))));
  await log.close();
}

describe('audit log file', () => {
  it('writes JSON lines with seq and a hash chain from 64 zeros', async () => {
    const path = newPath();
    const log = await openAuditLog(path);
    for (const e of oneOfEach()) await log.write(e);
    await log.flush();
    const lines = readLines(path);
    expect(lines).toHaveLength(5);
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(parsed[0].prev).toBe(GENESIS);
    for (let i = 1; i < lines.length; i++) expect(parsed[i].prev).toBe(lineHash(lines[i - 1]!));
    expect(parsed.map((p) => p.event)).toEqual([
      'policy.loaded',
      'session.start',
      'auth.failure',
      'query',
      'session.end',
    ]);
    expect(log.status()).toMatchObject({ written: 5, queued: 0, waiting: 0, failing: null });
    await log.close();
    await expect(log.write(oneOfEach()[0]!)).rejects.toThrow(AuditLogError);
  });

  it('continues the chain when a restarted sidecar opens its old file', async () => {
    const path = newPath();
    await writeLog(path, 5);
    await writeLog(path, 5);
    const seqs = readLines(path).map((l) => JSON.parse(l).seq);
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: true, lines: 10, chains: 1 });
  });

  it('after a torn last line (crash mid-write) starts on a new line and verify names the torn one', async () => {
    const path = newPath();
    await writeLog(path, 3);
    writeFileSync(path, '{"time":"2026-', { flag: 'a' });
    await writeLog(path, 2);
    const lines = readLines(path);
    expect(lines).toHaveLength(6);
    expect(lines[3]).toBe('{"time":"2026-');
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: false, line: 4, problem: 'malformed' });
  });

  it('rotation: reopen after rename keeps the chain across both files', async () => {
    const path = newPath('rot');
    const log = await openAuditLog(path);
    for (let i = 1; i <= 10; i++) await log.write(sampleQuery(i));
    await log.flush();
    renameSync(path, `${path}.1`); // what logrotate does before SIGHUP
    await log.write(sampleQuery(11)); // may land in either file: still one chain
    await log.reopen();
    for (let i = 12; i <= 20; i++) await log.write(sampleQuery(i));
    await log.close();

    const old = readLines(`${path}.1`);
    const now = readLines(path);
    expect(old.length + now.length).toBe(20);
    expect(JSON.parse(now[0]!).prev).toBe(lineHash(old[old.length - 1]!));
    expect(JSON.parse(now[0]!).seq).toBe(old.length + 1);
    expect(await verifyAuditFiles([`${path}.1`, path])).toMatchObject({
      ok: true,
      lines: 20,
      chains: 1,
      lastSeq: 20,
    });
    // The new file alone verifies too: its first line is the anchor.
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: true, firstSeq: old.length + 1 });
    // In the wrong order the seam is named.
    expect(await verifyAuditFiles([path, `${path}.1`])).toMatchObject({
      ok: false,
      file: `${path}.1`,
      line: 1,
    });
  });

  it('standard-output logs across restarts verify with allowRestarts, not without', async () => {
    const a = newPath('restart-a');
    const b = newPath('restart-b');
    await writeLog(a, 3);
    await writeLog(b, 3);
    const joined = newPath('restart');
    writeFileSync(joined, readFileSync(a, 'utf8') + readFileSync(b, 'utf8'));
    expect(await verifyAuditFiles([joined])).toMatchObject({ ok: false, line: 4, problem: 'seq-order' });
    expect(await verifyAuditFiles([joined], { allowRestarts: true })).toMatchObject({
      ok: true,
      chains: 2,
      lines: 6,
    });
    const c = captureIo();
    expect(await run(['verify', '--allow-restarts', joined], c.io)).toBe(0);
    expect(c.out[0]).toMatch(/2 chains \(restarts\)/);
  });
});

describe('dbguard audit verify', () => {
  let good: string;
  let lines: string[];
  beforeAll(async () => {
    good = newPath('thousand');
    await writeLog(good, 1000);
    lines = readLines(good);
  });

  const variant = (name: string, ls: string[]) => {
    const p = join(tmp.dir, `${name}.log`);
    writeFileSync(p, `${ls.join('\n')}\n`);
    return p;
  };

  it('passes a real 1,000-event log with a one-line summary', async () => {
    expect(lines).toHaveLength(1000);
    const c = captureIo();
    expect(await run(['verify', good], c.io)).toBe(0);
    expect(c.out).toHaveLength(1);
    expect(c.out[0]).toMatch(
      /^ok: 1000 lines in 1 file, seq 1\.\.1000, 1 chain, last hash [0-9a-f]{64}; unkeyed chain \(SHA-256\): shows accidental edits only;/,
    );
  });

  it('names the line after an edited line (hash mismatch)', async () => {
    const edited = [...lines];
    edited[499] = edited[499]!.replace(/"durationMs":[0-9.]+/, '"durationMs":0.001');
    expect(edited[499]).not.toBe(lines[499]);
    const c = captureIo();
    expect(await run(['verify', variant('edited', edited)], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/edited\.log:501: hash mismatch: "prev" is not the SHA-256 of line 500/);
  });

  it('names the line where a removed line was (seq gap)', async () => {
    const removed = lines.filter((_, i) => i !== 499);
    const c = captureIo();
    expect(await run(['verify', variant('removed', removed)], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/removed\.log:500: seq gap: expected 500, found 501 \(1 line removed/);
  });

  it('names a reorder and where the expected line went', async () => {
    const swapped = [...lines];
    [swapped[499], swapped[500]] = [swapped[500]!, swapped[499]!];
    const c = captureIo();
    expect(await run(['verify', variant('swapped', swapped)], c.io)).toBe(1);
    expect(c.err[0]).toMatch(
      /swapped\.log:500: seq out of order: expected 500, found 501; seq 500 is at line 501/,
    );
  });

  it('names a line that is not JSON, and a duplicated line', async () => {
    const broken = [...lines];
    broken[9] = 'not json';
    let c = captureIo();
    expect(await run(['verify', variant('broken', broken)], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/broken\.log:10: not a JSON object/);

    const dup = [...lines.slice(0, 10), lines[9]!, ...lines.slice(10)];
    c = captureIo();
    expect(await run(['verify', variant('dup', dup)], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/dup\.log:11: seq goes backwards: expected 11, found 10/);
  });

  it('usage errors exit 2; a missing file exits 1', async () => {
    let c = captureIo();
    expect(await run([], c.io)).toBe(2);
    c = captureIo();
    expect(await run(['verify'], c.io)).toBe(2);
    expect(c.err[0]).toMatch(/no FILE/);
    c = captureIo();
    expect(await run(['verify', join(tmp.dir, 'nope.log')], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/nope\.log:0: cannot read: ENOENT/);
  });
});

describe('batching', () => {
  const turn = () => new Promise<void>((r) => setImmediate(r));

  it('events are serialised when accepted: a batch larger than maxBatch is split, its tail kept in order', async () => {
    const path = newPath('split');
    const batches: number[] = [];
    const log = await openAuditLog(path, {
      lingerMs: 10_000,
      maxBatch: 8,
      observer: { written: (b) => batches.push(b.length) },
    });
    // 20 events in one turn: the full-batch kick runs only after all of them are accepted.
    for (let i = 1; i <= 20; i++) expect(log.tryWrite(sampleQuery(i))).toBe(true);
    expect(log.status().chain.seq).toBe(20); // seq and prev are assigned at acceptance
    await log.flush();
    expect(batches).toEqual([8, 8, 4]);
    for (let i = 21; i <= 23; i++) log.tryWrite(sampleQuery(i));
    await log.close();
    expect(readLines(path).map((l) => JSON.parse(l).seq)).toEqual(
      Array.from({ length: 23 }, (_, i) => i + 1),
    );
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: true, lines: 23 });
  });

  it('an event that cannot be serialised is refused to its writer; the log and its chain go on', async () => {
    const path = newPath('unserialisable');
    const errors: string[] = [];
    const log = await openAuditLog(path, {
      lingerMs: 10_000,
      observer: { error: (e) => errors.push(e.message) },
    });
    log.tryWrite(sampleQuery(1));
    const bad = { ...sampleQuery(2), rowCount: 10n } as unknown as ReturnType<typeof sampleQuery>;
    expect(() => log.tryWrite(bad)).toThrow(/BigInt/);
    await expect(log.write(bad)).rejects.toThrow(/BigInt/);
    // counted where SREs look (dbguard_audit_write_errors_total), with the reason
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/audit event refused, it cannot be serialised: .*BigInt/);
    log.tryWrite(sampleQuery(3));
    await log.flush(); // would hang if the refused event had been counted as accepted
    await log.close();
    const lines = readLines(path).map((l) => JSON.parse(l));
    // sampleQuery(3) is a 'mask' decision, the refused sampleQuery(2) an 'allow': line 2 tells them apart
    expect(lines.map((l) => [l.seq, l.decision])).toEqual([
      [1, 'allow'],
      [2, 'mask'],
    ]);
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: true, lines: 2 });
  });

  it('a slow trickle of events (one client) goes out in few writes; flush does not wait for the linger', async () => {
    const path = newPath('linger');
    const batches: number[] = [];
    const log = await openAuditLog(path, {
      lingerMs: 10_000,
      observer: { written: (b) => batches.push(b.length) },
    });
    for (let i = 1; i <= 20; i++) {
      await log.write(sampleQuery(i));
      await turn(); // each event in its own event-loop turn, like statements of one client
    }
    expect(batches).toEqual([]); // still lingering: nothing written yet
    await log.flush(); // at once, not after 10 s
    expect(batches).toEqual([20]);
    await log.write(sampleQuery(21));
    await log.close();
    expect(batches).toEqual([20, 1]);
    expect(readLines(path).map((l) => JSON.parse(l).seq)).toEqual(
      Array.from({ length: 21 }, (_, i) => i + 1),
    );
    expect(await verifyAuditFiles([path])).toMatchObject({ ok: true, lines: 21 });
  });

  it('under steady traffic the batches stay large: what arrives during a write lingers too', async () => {
    // A sink that takes 2 ms per write, and a statement every event-loop turn for 300 ms.
    const slow = new Writable({ write: (_c, _e, cb) => setTimeout(cb, 2) });
    const batches: number[] = [];
    const log = await openAuditLog('-', {
      stdout: slow,
      lingerMs: 25,
      observer: { written: (b) => batches.push(b.length) },
    });
    const until = Date.now() + 300;
    let n = 0;
    while (Date.now() < until) {
      log.tryWrite(sampleQuery(++n));
      await turn();
    }
    await log.close();
    expect(batches.reduce((a, b) => a + b, 0)).toBe(n);
    // Writing at once after each 2 ms write would give a batch per write, well over 100 of them; lingering
    // gives about one per 25 ms (12). The bound leaves room for a loaded host's late timers (17 seen with
    // six builds running) and still tells the two apart.
    expect(batches.length).toBeLessThanOrEqual(Math.ceil(300 / 25) * 3);
  });

  it('tryWrite queues without a promise while there is room, and says no when the caller must wait', async () => {
    const path = newPath('try');
    const log = await openAuditLog(path, { lingerMs: 10_000, maxQueue: 2, maxBatch: 64 });
    expect(log.tryWrite(sampleQuery(1))).toBe(true);
    expect(log.tryWrite(sampleQuery(2))).toBe(true);
    expect(log.tryWrite(sampleQuery(3))).toBe(false); // full: write() would make the caller wait
    const waited = log.write(sampleQuery(3));
    expect(log.tryWrite(sampleQuery(4))).toBe(false); // a writer is waiting: order comes first
    await waited;
    await log.flush();
    expect(log.tryWrite(sampleQuery(4))).toBe(true);
    await log.close();
    expect(log.tryWrite(sampleQuery(5))).toBe(false);
    expect(readLines(path).map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3, 4]);
  });

  it('a full batch is written without waiting for the linger; lingerMs 0 writes every turn', async () => {
    const path = newPath('full');
    const batches: number[] = [];
    const log = await openAuditLog(path, {
      lingerMs: 10_000,
      maxBatch: 8,
      observer: { written: (b) => batches.push(b.length) },
    });
    for (let i = 1; i <= 16; i++) await log.write(sampleQuery(i));
    // Full batches go out long before the 10 s linger would end.
    await until('two full batches written', () => batches.length === 2, 5000, 5);
    expect(batches).toEqual([8, 8]);
    await log.close();

    const eager: number[] = [];
    const log0 = await openAuditLog(newPath('eager'), {
      lingerMs: 0,
      observer: { written: (b) => eager.push(b.length) },
    });
    for (let i = 1; i <= 5; i++) {
      await log0.write(sampleQuery(i));
      await new Promise((r) => setTimeout(r, 5));
    }
    await log0.close();
    expect(eager).toEqual([1, 1, 1, 1, 1]);
  });
});

describe('backpressure', () => {
  it('a pipe nobody reads makes writers wait, and nothing is lost', async () => {
    const fifo = join(tmp.dir, 'slow.fifo');
    execFileSync('mkfifo', [fifo]);
    // Hold a read end without reading, so the writer can open the FIFO.
    const idleReader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const metrics = new SidecarMetrics({ defaultMetrics: false });
    const log = await openAuditLog(fifo, { maxQueue: 32, maxBatch: 16, observer: metrics.auditObserver() });

    const N = 2000; // ~1 MB of lines: far more than the 64 KiB a pipe buffers
    let accepted = 0;
    const writes = Array.from({ length: N }, (_, i) =>
      log.write(sampleQuery(i + 1)).then(() => void accepted++),
    );
    await new Promise((r) => setTimeout(r, 300));
    // The pipe is full: most writers are waiting, none was dropped or rejected.
    expect(accepted).toBeLessThan(N / 2);
    expect(log.status().waiting).toBeGreaterThan(N / 2);
    expect(log.status().queued).toBeLessThanOrEqual(32);

    // Now read everything.
    const reader = createReadStream(fifo);
    closeSync(idleReader);
    const chunks: Buffer[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      reader.on('data', (c) => chunks.push(c as Buffer));
      reader.on('end', () => resolve());
      reader.on('error', reject);
    });
    await Promise.all(writes);
    expect(accepted).toBe(N);
    await log.close(); // closes the write end: the reader sees end of file
    await ended;

    const out = Buffer.concat(chunks).toString('utf8').replace(/\n$/, '').split('\n');
    expect(out).toHaveLength(N);
    expect(out.map((l) => JSON.parse(l).seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    const copy = join(tmp.dir, 'slow-copy.log');
    writeFileSync(copy, `${out.join('\n')}\n`);
    expect(await verifyAuditFiles([copy])).toMatchObject({ ok: true, lines: N });

    const text = await metrics.text();
    expect(text).toMatch(/^dbguard_audit_events_total\{event="query"\} 2000$/m);
    const waits = Number(/^dbguard_audit_write_wait_seconds_count (\d+)$/m.exec(text)?.[1]);
    expect(waits).toBeGreaterThan(N / 2);
  });

  it('standard output as the sink: waits for the stream, fails loudly when it breaks', async () => {
    const stream = new PassThrough();
    const log = await openAuditLog('-', { stdout: stream, maxQueue: 4, maxBatch: 2 });
    for (let i = 1; i <= 10; i++) await log.write(sampleQuery(i));
    await log.flush();
    const lines = stream.read().toString('utf8').trim().split('\n');
    expect(lines.map((l: string) => JSON.parse(l).seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await log.close();

    const broken = new Writable({ write: (_c, _e, cb) => cb(new Error('EPIPE')) });
    broken.on('error', () => {});
    const bad = await openAuditLog('-', { stdout: broken });
    await bad.write(sampleQuery(1)); // accepted into the queue
    await expect(bad.flush()).rejects.toThrow(/EPIPE/);
    await expect(bad.write(sampleQuery(2))).rejects.toThrow(AuditLogError);
    expect(bad.status().failed).toBe(true);
  });

  it('a failing disk (/dev/full) is retried, keeps the events, and says why', async () => {
    const errors: string[] = [];
    const log = await openAuditLog('/dev/full', {
      retryInitialMs: 5,
      retryMaxMs: 20,
      closeTimeoutMs: 200,
      observer: { error: (e) => errors.push(e.message) },
    });
    await log.write(sampleQuery(1));
    await new Promise((r) => setTimeout(r, 100));
    expect(log.status()).toMatchObject({ written: 0, failed: false });
    expect(log.status().failing).toMatch(/ENOSPC/);
    expect(errors.length).toBeGreaterThan(1); // retried, not dropped
    await expect(log.close()).rejects.toThrow(/gave up at close: .*ENOSPC/);
  });

  it('a write that never finishes (a stalled pipe) marks the sink down once; close gives up in time', async () => {
    const stuck = new Writable({ write: () => {} }); // never calls back, like a pipe nobody reads
    const downs: string[] = [];
    const errors: string[] = [];
    const log = await openAuditLog('-', {
      stdout: stuck,
      stallTimeoutMs: 100,
      lingerMs: 0,
      maxQueue: 2,
      observer: { down: (r) => downs.push(r), error: (e) => errors.push(e.message) },
    });
    await log.write(sampleQuery(1));
    expect(log.health()).toBeNull(); // in flight, not yet stalled
    await until('the stall', () => log.health());
    expect(log.health()).toMatch(/^audit log -: stalled, a write has not finished for \d+s$/);
    expect(log.status()).toMatchObject({ stalled: true, failed: false });
    expect(downs).toEqual([expect.stringMatching(/stalled/)]);
    expect(errors).toEqual([expect.stringMatching(/stalled/)]);
    // Later writes still queue (the stall may end); beyond the queue and as many waiting, they are
    // refused instead of piling up.
    await log.write(sampleQuery(2));
    await log.write(sampleQuery(3));
    const waiting = [log.write(sampleQuery(4)), log.write(sampleQuery(5))];
    for (const w of waiting) w.catch(() => {});
    await expect(log.write(sampleQuery(6))).rejects.toThrow(/stalled.*; event not queued/);
    const t0 = Date.now();
    await expect(log.close(200)).rejects.toThrow(/gave up at close: .*stalled/);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('a bad target is a clear error', async () => {
    await expect(openAuditLog(join(tmp.dir, 'no-such-dir', 'a.log'))).rejects.toThrow(/audit log .*ENOENT/);
  });
});
