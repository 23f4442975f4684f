/**
 * The version of a compiled policy: `sha256:` + hex of its canonical JSON without `version`.
 * Canonical: object keys sorted, undefined members dropped, no whitespace; so the version depends
 * on what the policy says, not on how its source was ordered or formatted.
 */
import { createHash } from 'node:crypto';
import type { CompiledPolicy } from './compiled.js';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value);
    if (s === undefined) throw new TypeError(`canonicalJson: cannot encode ${typeof value}`);
    return s;
  }
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const keys = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

/** The version a compiled policy must carry; `version` itself is left out of the hash. */
export function policyVersion(policy: Omit<CompiledPolicy, 'version'> & { version?: string }): string {
  const { version: _ignored, ...rest } = policy;
  return `sha256:${createHash('sha256').update(canonicalJson(rest)).digest('hex')}`;
}
