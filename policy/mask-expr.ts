/**
 * SQL expressions for the masking strategies (contract §1 MaskingRule). Built-in functions only,
 * PostgreSQL 13-18, and every result is cast back to the column's own type so `*`, UNION and
 * INSERT ... SELECT keep working. Expressions never raise an error that could carry a real value.
 */
import { quoteLiteral } from './ast.js';
import type { CatalogColumn } from './catalog.js';
import { hashCall } from './hash-key.js';
import type { EffectiveMask } from './subjects.js';

function cast(expr: string, type: string): string {
  return `CAST(${expr} AS ${type})`;
}

function nullOf(type: string): string {
  return cast('NULL', type);
}

/**
 * Hash pseudonym in the column's type where one exists (text, uuid, integers, numbers): the keyed
 * function's hex HMAC-SHA256, so the text carries the key's id and never the key (policy/hash-key.ts).
 * The caller makes sure the function is usable in this database (rewrite.ts).
 */
function hashed(value: string, col: CatalogColumn, keyId: string): string {
  const h = hashCall(value, keyId);
  const t = col.type;
  if (col.category === 'S') return cast(h, t);
  if (t === 'uuid') return cast(`substr(${h}, 1, 32)`, t);
  if (t === 'smallint') return cast(`(CAST('x' || substr(${h}, 1, 4) AS bit(16))::integer % 32768)`, t);
  if (t === 'integer') return cast(`CAST('x' || substr(${h}, 1, 8) AS bit(32))::integer`, t);
  if (t === 'bigint') return cast(`CAST('x' || substr(${h}, 1, 16) AS bit(64))::bigint`, t);
  if (col.category === 'N') return cast(`CAST('x' || substr(${h}, 1, 12) AS bit(48))::bigint`, t);
  return nullOf(t);
}

/** PostgreSQL 14 added negative field numbers to split_part (count from the end). */
const SPLIT_PART_FROM_END = 140000;

/**
 * The masked value of `value` (an SQL expression reading the column) for one strategy.
 * Unknown strategies and type/strategy combinations without a sensible mask give NULL.
 * `serverVersionNum` (the catalog snapshot's) picks cheaper built-ins where the server has them;
 * every form gives the same values (tested against each other on the server).
 */
export function maskExpression(
  value: string,
  col: CatalogColumn,
  m: EffectiveMask,
  serverVersionNum = 0,
): string {
  const t = col.type;
  const text = col.category === 'S';
  const v = `CAST(${value} AS text)`;
  switch (m.strategy) {
    case 'Redact':
      return text ? cast(`'****'`, t) : nullOf(t);
    case 'Nullify':
      return nullOf(t);
    case 'Partial': {
      if (!text) return nullOf(t);
      const kf = Math.max(0, Math.floor(m.partial?.keepFirst ?? 0));
      const kl = Math.max(0, Math.floor(m.partial?.keepLast ?? 0));
      const mc = quoteLiteral((m.partial?.maskChar ?? '*').slice(0, 1) || '*');
      // left(v, 0) and right(v, 0) are '' but still cost a call per row.
      const kept = [
        ...(kf > 0 ? [`left(${v}, ${kf})`] : []),
        `repeat(${mc}, length(${v}) - ${kf + kl})`,
        ...(kl > 0 ? [`right(${v}, ${kl})`] : []),
      ];
      return cast(
        `CASE WHEN ${value} IS NULL THEN NULL` +
          ` WHEN length(${v}) <= ${kf + kl} THEN repeat(${mc}, length(${v}))` +
          ` ELSE ${kept.join(' || ')} END`,
        t,
      );
    }
    case 'Email': {
      if (!text) return nullOf(t);
      // The domain is what follows the last '@'. A masked read of many rows is bound by the server
      // computing this, so the cheapest built-in wins: split_part(v, '@', -1) on PostgreSQL 14+, else
      // reverse/split_part/reverse, which costs the server four times as much per row (and
      // regexp_replace(v, '^.*@', '') twice as much again; docs/benchmarks.md items 5 and 19).
      const domain =
        serverVersionNum >= SPLIT_PART_FROM_END
          ? `split_part(${v}, '@', -1)`
          : `reverse(split_part(reverse(${v}), '@', 1))`;
      return cast(
        `CASE WHEN ${value} IS NULL THEN NULL` +
          ` WHEN strpos(${v}, '@') > 0 THEN left(split_part(${v}, '@', 1), 1) || '***@' || ${domain}` +
          ` ELSE left(${v}, 1) || '***' END`,
        t,
      );
    }
    case 'Hash':
      // A policy without a key id (compiled by an older operator, which inlined a salt) has no keyed
      // form: the rewrite refuses it before getting here (rewrite.ts), and NULL is the safe fallback.
      return m.hash?.keyId ? hashed(value, col, m.hash.keyId) : nullOf(t);
    case 'Constant':
      return m.constant?.value === undefined ? nullOf(t) : cast(quoteLiteral(m.constant.value), t);
    case 'Generalize': {
      const unit = m.generalize?.unit;
      const step = m.generalize?.step;
      if (col.category === 'D' && !/^time( |\(|$)/.test(t)) {
        // A date goes through timestamp, not the implicit timestamptz: same day, without a time zone
        // conversion on the way in and out (a third of this mask's cost per row).
        const at = t === 'date' ? `CAST(${value} AS timestamp)` : value;
        return cast(`date_trunc(${quoteLiteral(unit ?? 'year')}, ${at})`, t);
      }
      if (col.category === 'N' && typeof step === 'number' && step > 0 && Number.isFinite(step)) {
        return cast(`floor(CAST(${value} AS numeric) / ${step}) * ${step}`, t);
      }
      return nullOf(t);
    }
    default:
      return nullOf(t);
  }
}
