/**
 * Go-style durations (`30s`, `5m`, `1h30m`, `1.5h`, `500ms`), the form Kubernetes users know from
 * other resources, to seconds. The accepted syntax is the schema's pattern (api/patterns.ts).
 */
import { PATTERNS } from '../api/patterns.js';

export class DurationError extends Error {}

const UNIT_SECONDS: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };
const WHOLE = new RegExp(PATTERNS.duration.pattern);
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)/g;

/** Seconds in a duration; throws DurationError naming the text when it is not a duration. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || !WHOLE.test(text)) {
    throw new DurationError(
      `${JSON.stringify(text)} is not a duration: use a number and unit such as 30s, 5m or 1h30m (units h, m, s, ms)`,
    );
  }
  let seconds = 0;
  for (const [, n, unit] of text.matchAll(PART)) seconds += Number(n) * UNIT_SECONDS[unit!]!;
  // Float sums such as 0.1s+0.2s: keep millisecond precision, the finest unit we accept.
  seconds = Math.round(seconds * 1000) / 1000;
  if (!Number.isFinite(seconds)) throw new DurationError(`${JSON.stringify(text)} is too long a duration`);
  return seconds;
}

/** Like parseDuration, but also rejects zero: a timeout of nothing is a mistake, not a choice. */
export function parsePositiveDuration(text: string): number {
  const s = parseDuration(text);
  if (s <= 0) throw new DurationError(`${JSON.stringify(text)} must be longer than zero`);
  return s;
}
