/**
 * The audit hash chain, shared by the writer and `dbguard audit verify`.
 *
 * Every line is one JSON object with `seq` (1, 2, 3, ... per chain) and `prev`: the SHA-256 (hex)
 * of the previous line's bytes, UTF-8, without its trailing newline. The first line of a chain has
 * `seq: 1` and `prev` = 64 zeros (GENESIS). A file opened again after rotation (or a sidecar
 * restart appending to its old file) continues the chain: its first line carries the next `seq` and
 * the hash of the last line written before, so `verify old new` checks the seam too, and `verify
 * new` alone takes the first line's `seq`/`prev` as its anchor.
 */
import { hash } from 'node:crypto';

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
