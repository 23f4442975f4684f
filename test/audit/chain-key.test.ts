/**
 * Issue #18 item 4, as an attack: someone with write access to the audit log (the log pipeline, a
 * node user) deletes a line and recomputes every hash after it. That passes the unkeyed chain's
 * verification (which is why it "shows accidental edits only") and fails the keyed one, whatever the
 * attacker does without the key.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../cli/audit.js';
import { type AuditKey, auditKeyFrom, GENESIS, lineHash } from '../../sidecar/audit/chain.js';
import { loadAuditParser } from '../../sidecar/audit/statement.js';
import { verifyAuditFiles } from '../../sidecar/audit/verify.js';
import { openAuditLog } from '../../sidecar/audit/writer.js';
import { captureIo, readLines, sampleQuery, tempDir } from './helpers.js';

const tmp = tempDir('chain-key');
const keyFile = join(tmp.dir, 'audit.key');
const otherKeyFile = join(tmp.dir, 'other.key');
let key: AuditKey;
beforeAll(() => {
  loadAuditParser();
  writeFileSync(keyFile, 'c0ffee'.repeat(8) + '\n'); // as `openssl rand -hex 24 > key` leaves it
  writeFileSync(otherKeyFile, 'beef'.repeat(12));
  key = auditKeyFrom(Buffer.from('c0ffee'.repeat(8)));
});
afterAll(() => tmp.cleanup());

let n = 0;
async function writeLog(k: AuditKey | undefined, events = 20): Promise<string> {
  const path = join(tmp.dir, `audit-${++n}.log`);
  const log = await openAuditLog(path, k ? { key: k } : {});
  for (let i = 1; i <= events; i++) await log.write(sampleQuery(i));
  await log.close();
  return path;
}

/**
 * The attacker's rewrite without the key: remove line `victim` (1-based), renumber what follows and
 * recompute every `prev` after it with SHA-256, the only hash they can compute. `relabel` also marks
 * the rewritten lines as the unkeyed chain, so they are at least self-consistent.
 */
function deleteAndRecompute(lines: string[], victim: number, relabel: boolean): string[] {
  const out = lines.slice(0, victim - 1);
  for (const line of lines.slice(victim)) {
    const obj = JSON.parse(line);
    obj.seq -= 1;
    obj.prev = out.length ? lineHash(out[out.length - 1]!) : GENESIS;
    if (relabel) {
      obj.chain = 'sha256';
      delete obj.keyId;
    }
    out.push(JSON.stringify(obj));
  }
  return out;
}

async function verifyCli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const c = captureIo();
  const code = await run(['verify', ...args], c.io);
  return { code, out: c.out, err: c.err };
}

describe('keyed audit chain', () => {
  it('an unkeyed log: a deleted line with recomputed hashes passes (accidental edits only), and verify says so', async () => {
    const path = await writeLog(undefined);
    const lines = readLines(path);
    expect(JSON.parse(lines[0]!)).toMatchObject({ seq: 1, prev: GENESIS, chain: 'sha256' });
    const forged = join(tmp.dir, 'unkeyed-forged.log');
    writeFileSync(forged, `${deleteAndRecompute(lines, 7, false).join('\n')}\n`);
    const r = await verifyCli([forged]);
    expect(r.code).toBe(0);
    expect(r.out[0]).toMatch(/^ok: 19 lines .*; unkeyed chain \(SHA-256\): shows accidental edits only;/);
  });

  it('a keyed log verifies with its key, and says which guarantee holds', async () => {
    const path = await writeLog(key);
    const lines = readLines(path);
    expect(JSON.parse(lines[3]!)).toMatchObject({ seq: 4, chain: 'hmac-sha256', keyId: key.id });
    // prev is not the plain SHA-256 any more
    expect(JSON.parse(lines[3]!).prev).not.toBe(lineHash(lines[2]!));
    const r = await verifyCli(['--key-file', keyFile, path]);
    expect(r).toMatchObject({ code: 0, err: [] });
    expect(r.out[0]).toMatch(
      new RegExp(
        `^ok: 20 lines in 1 file, seq 1\\.\\.20, 1 chain, last hash [0-9a-f]{64}; keyed chain \\(HMAC-SHA256, key ${key.id}\\): no line was edited, removed, inserted or reordered by anyone without the key`,
      ),
    );
    // without the key only the sequence can be checked, and the summary says that, not "ok" alone
    const noKey = await verifyCli([path]);
    expect(noKey.code).toBe(0);
    expect(noKey.out[0]).toMatch(
      /; sequence only: the lines are keyed \(key [0-9a-f]{16}\) and no --key-file was given/,
    );
    // another key is named as such
    const other = await verifyCli([`--key-file=${otherKeyFile}`, path]);
    expect(other.code).toBe(1);
    expect(other.err[0]).toMatch(/:1: line is keyed with key [0-9a-f]{16}, not with the key given/);
  });

  it('the attack on a keyed log: a deleted line with recomputed hashes FAILS keyed verification', async () => {
    const path = await writeLog(key);
    const lines = readLines(path);
    // (a) hashes recomputed with SHA-256, lines still claiming to be keyed
    const forgedA = join(tmp.dir, 'keyed-forged-a.log');
    writeFileSync(forgedA, `${deleteAndRecompute(lines, 7, false).join('\n')}\n`);
    const a = await verifyCli(['--key-file', keyFile, forgedA]);
    expect(a.code).toBe(1);
    expect(a.err[0]).toMatch(
      /keyed-forged-a\.log:7: hash mismatch: "prev" is not the HMAC-SHA256 \(with the key given\) of line 6/,
    );
    // (b) the rewritten lines relabelled as the unkeyed chain: consistent, and refused as unkeyed
    const forgedB = join(tmp.dir, 'keyed-forged-b.log');
    writeFileSync(forgedB, `${deleteAndRecompute(lines, 7, true).join('\n')}\n`);
    const b = await verifyCli(['--key-file', keyFile, forgedB]);
    expect(b.code).toBe(1);
    expect(b.err[0]).toMatch(/keyed-forged-b\.log:7: line is not keyed \(chain "sha256"\)/);
    // (c) the whole log rewritten as an unkeyed chain from its first line
    const forgedC = join(tmp.dir, 'keyed-forged-c.log');
    writeFileSync(forgedC, `${deleteAndRecompute(lines, 1, true).join('\n')}\n`);
    const c = await verifyCli(['--key-file', keyFile, forgedC]);
    expect(c.code).toBe(1);
    expect(c.err[0]).toMatch(/keyed-forged-c\.log:1: line is not keyed/);
    // the untouched log still passes
    expect((await verifyAuditFiles([path], { key })).ok).toBe(true);
  });

  it('a keyed file continues its chain across a restart (the tail is hashed with the key)', async () => {
    const path = await writeLog(key, 5);
    const again = await openAuditLog(path, { key });
    await again.write(sampleQuery(6));
    await again.close();
    const r = await verifyAuditFiles([path], { key });
    expect(r).toMatchObject({ ok: true, lines: 6, guarantee: 'keyed', keyId: key.id });
  });

  it('lines of older versions (no "chain" field) are the unkeyed chain', async () => {
    const path = await writeLog(undefined, 5);
    const legacy: string[] = [];
    for (const line of readLines(path)) {
      const obj = JSON.parse(line);
      delete obj.chain;
      obj.prev = legacy.length ? lineHash(legacy[legacy.length - 1]!) : GENESIS;
      legacy.push(JSON.stringify(obj));
    }
    const file = join(tmp.dir, 'legacy.log');
    writeFileSync(file, `${legacy.join('\n')}\n`);
    expect(await verifyAuditFiles([file])).toMatchObject({ ok: true, lines: 5, guarantee: 'unkeyed' });
  });

  it('a key file that is too short or missing is a usage error', async () => {
    const short = join(tmp.dir, 'short.key');
    writeFileSync(short, 'abc\n');
    const r = await verifyCli(['--key-file', short, 'whatever.log']);
    expect(r.code).toBe(2);
    expect(r.err[0]).toMatch(/--key-file .*short\.key: audit key too short: 3 bytes, at least 16/);
    expect((await verifyCli(['--key-file', join(tmp.dir, 'nope.key'), 'x.log'])).code).toBe(2);
  });
});
