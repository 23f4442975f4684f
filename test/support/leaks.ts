/**
 * One leak detector for every attack test: does a text a masked subject received carry a real value,
 * in clear or transformed the way an attacker would transform it to get it past a naive check?
 *
 * For each secret it looks for: the value itself and reversed (case-insensitive); every substring of
 * 4 characters that holds a letter, and of 6 characters otherwise (shorter runs of digits turn up in
 * any output by chance); the value's UTF-8 bytes in hex (as encode(...,
 * 'hex') or a bytea prints them); base64 (as encode(..., 'base64') prints it); and its md5 and sha256
 * digests in hex. A substring that also appears in a form the mask shows on purpose (Partial keeps the
 * last four digits, Email the domain, Generalize the year) is not a leak: pass those forms as `shown`.
 */
import { createHash } from 'node:crypto';

export interface LeakFinding {
  secret: string;
  form: string;
  found: string;
}

export interface LeakDetectorOptions {
  /** masked forms the policy shows on purpose; substrings of these are not leaks */
  shown?: string[];
}

interface Needle {
  secret: string;
  form: string;
  text: string;
}

function substrings(s: string, min: number): string[] {
  const out = new Set<string>();
  for (let i = 0; i + min <= s.length; i++) out.add(s.slice(i, i + min));
  return [...out];
}

function needlesFor(secret: string, shown: string[]): Needle[] {
  const lower = secret.toLowerCase();
  const bytes = Buffer.from(secret, 'utf8');
  const needles: Needle[] = [
    { secret, form: 'clear', text: lower },
    { secret, form: 'reversed', text: [...lower].reverse().join('') },
    { secret, form: 'hex', text: bytes.toString('hex') },
    // base64 without its padding: an attacker's encode() of the value alone ends the same way
    { secret, form: 'base64', text: bytes.toString('base64').replace(/=+$/, '') },
    { secret, form: 'md5', text: createHash('md5').update(bytes).digest('hex') },
    { secret, form: 'sha256', text: createHash('sha256').update(bytes).digest('hex') },
  ];
  const allowed = shown.map((s) => s.toLowerCase());
  const windows = [...substrings(lower, 4).filter((w) => /\p{L}/u.test(w)), ...substrings(lower, 6)];
  for (const sub of new Set(windows)) {
    if (sub === lower || allowed.some((a) => a.includes(sub))) continue;
    needles.push({ secret, form: `substring ${JSON.stringify(sub)}`, text: sub });
  }
  return needles;
}

/** Builds a detector for these secrets; call it on every text the masked subject received. */
export function leakDetector(secrets: readonly string[], opts: LeakDetectorOptions = {}) {
  const needles = secrets.flatMap((s) => needlesFor(s, opts.shown ?? []));
  return (text: string): LeakFinding[] => {
    const hay = text.toLowerCase();
    // base64 is case-sensitive: search it in the original text
    return needles
      .filter((n) => (n.form === 'base64' ? text.includes(n.text) : hay.includes(n.text)))
      .map((n) => ({ secret: n.secret, form: n.form, found: n.text }));
  };
}
