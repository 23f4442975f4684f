/**
 * The audit hash chain, shared by the writer and `dbguard audit verify`.
 *
 * Every line is one JSON object with `seq` (1, 2, 3, ... per chain), `prev` and `chain`:
 *
 * - `chain: "sha256"` (no key given; lines of older versions carry no `chain` and are this mode):
 *   `prev` is the SHA-256 (hex) of the previous line's bytes. It shows accidental edits only: whoever
 *   removes or edits a line can recompute every hash after it.
 * - `chain: "hmac-sha256"` with `keyId` (`--audit-key-file`): `prev` is the HMAC-SHA256 of the
 *   previous line's bytes under a key the sidecar holds and the log pipeline does not. Without the key
 *   no line can be edited, removed, inserted or reordered unnoticed; `keyId` names the key (a hash of
 *   it, not the key) so a verifier with the wrong key says so.
 *
 * Bytes are UTF-8, without the trailing newline. The first line of a chain has `seq: 1` and `prev` =
 * 64 zeros (GENESIS). A file opened again after rotation (or a sidecar restart appending to its old
 * file) continues the chain: its first line carries the next `seq` and the hash of the last line
 * written before, so `verify old new` checks the seam too, and `verify new` alone takes the first
 * line's `seq`/`prev` as its anchor.
 */
import { createHash, createHmac, hash } from 'node:crypto';

export const GENESIS = '0'.repeat(64);

export interface ChainState {
  /** seq of the last line written; 0 before the first line */
  seq: number;
  /** hash of the last line written; GENESIS before the first line */
  prev: string;
}

export function lineHash(line: Buffer | string): string {
  // One-shot hash (Node >= 20.12): half the cost of createHash().update().digest() per line.
  return hash('sha256', line, 'hex');
}

export function isHash(v: unknown): v is string {
  return typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
}

export type ChainMode = 'sha256' | 'hmac-sha256';

/** An audit key, as read from its file (a mounted Secret). */
export interface AuditKey {
  key: Buffer;
  /** 16 hex digits naming the key: a hash of it, useless for forging */
  id: string;
}

/** Shortest key accepted: 16 bytes (128 bits). `openssl rand -hex 32` makes a good one. */
export const MIN_AUDIT_KEY_BYTES = 16;

/** The key from a key file's bytes; one trailing newline (as `echo` or an editor leave it) is not part. */
export function auditKeyFrom(bytes: Buffer): AuditKey {
  let key = bytes;
  if (key.at(-1) === 0x0a) key = key.subarray(0, key.at(-2) === 0x0d ? -2 : -1);
  if (key.length < MIN_AUDIT_KEY_BYTES)
    throw new Error(`audit key too short: ${key.length} bytes, at least ${MIN_AUDIT_KEY_BYTES}`);
  const id = createHash('sha256').update('dbguard audit key id\0').update(key).digest('hex').slice(0, 16);
  return { key: Buffer.from(key), id };
}

/** How lines of one mode are chained: the hash of a line, and the fields each line carries. */
export interface Chainer {
  mode: ChainMode;
  keyId?: string;
  /** appended after `"prev":"..."` in every line written */
  suffix: string;
  hash(line: Buffer | string): string;
}

export function chainer(key?: AuditKey): Chainer {
  if (!key) return { mode: 'sha256', suffix: ',"chain":"sha256"', hash: lineHash };
  const k = key.key;
  return {
    mode: 'hmac-sha256',
    keyId: key.id,
    suffix: `,"chain":"hmac-sha256","keyId":"${key.id}"`,
    hash: (line) => createHmac('sha256', k).update(line).digest('hex'),
  };
}
