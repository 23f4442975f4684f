/**
 * Tell the operator of a proxy, once per policy version, database and reason, that the policy's Hash
 * masks cannot be computed in a database (policy/hash-key.ts): every statement that needs one is then
 * refused for masked subjects, and the log line says what to run. The first refused statement would
 * say it too, but only to the client.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import type { CatalogSnapshot } from '../policy/catalog.js';
import { hashKeyIds } from '../policy/hash-key.js';

const MAX_REMEMBERED = 256;

export class HashKeyWarning {
  private readonly warned = new Set<string>();

  check(
    policy: CompiledPolicy,
    catalog: CatalogSnapshot,
    database: string,
    log: (fields: Record<string, unknown>) => void,
  ): void {
    if (catalog.hashFunction?.usable) return;
    const keyIds = hashKeyIds(policy);
    if (!keyIds.length) return;
    const why = catalog.hashFunction?.why ?? 'unknown';
    const key = JSON.stringify([policy.version, database, why]);
    if (this.warned.has(key)) return;
    if (this.warned.size >= MAX_REMEMBERED) this.warned.clear();
    this.warned.add(key);
    log({
      msg: `Hash masking needs \`dbguard db install\` in database ${database} (${why}); masked subjects are refused every statement that reads a Hash-masked column`,
      policy: policy.policy,
      database,
      keyIds,
    });
  }
}
