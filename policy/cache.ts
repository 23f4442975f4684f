/**
 * A bounded LRU cache of decisions. The key holds everything a decision depends on: the text, who
 * asks (the identity facts subjects match), the policy version, the database, the search_path in
 * effect and the catalog snapshot version. Prepared statements and repeated texts cost a lookup.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import type { Decision } from './decision.js';
import type { Identity } from './identity.js';
import { judge } from './judge.js';
import type { SessionContext } from './resolve.js';

export function subjectKey(id: Identity): string {
  return JSON.stringify([
    id.serviceAccount ?? '',
    id.user ?? '',
    [...(id.groups ?? [])].sort(),
    id.databaseUser,
  ]);
}

export function decisionKey(sql: string, ctx: SessionContext, policy: CompiledPolicy): string {
  return JSON.stringify([
    policy.version,
    subjectKey(ctx.identity),
    ctx.database,
    ctx.searchPath,
    ctx.tempSchema ?? ctx.catalog?.tempSchema ?? '',
    ctx.catalog?.version ?? '-',
    sql,
  ]);
}

export class DecisionCache {
  private readonly map = new Map<string, Decision>();
  hits = 0;
  misses = 0;

  constructor(readonly maxEntries = 10_000) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1)
      throw new Error('DecisionCache: maxEntries must be >= 1');
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): Decision | undefined {
    const d = this.map.get(key);
    if (d === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, d);
    return d;
  }

  set(key: string, d: Decision): void {
    this.map.delete(key);
    this.map.set(key, d);
    while (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value!);
  }

  clear(): void {
    this.map.clear();
  }

  /** judge() through the cache. Decisions are shared: treat them as read-only. */
  judge(sql: string, ctx: SessionContext, policy: CompiledPolicy): Decision {
    const key = decisionKey(sql, ctx, policy);
    const hit = this.get(key);
    if (hit) {
      this.hits++;
      return hit;
    }
    this.misses++;
    const d = judge(sql, ctx, policy);
    // a deny that asks for a fresh catalog must not outlive that catalog: the key holds its version
    this.set(key, d);
    return d;
  }
}
