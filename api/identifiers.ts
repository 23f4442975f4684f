/**
 * How resource fields name PostgreSQL objects: `schema.table`, `table` (schema public), quoted
 * `"Sales"."Q1"` (case kept) or unquoted (folded to lower case, as PostgreSQL does), and in
 * patterns `*` for any name. Parsing yields the names as PostgreSQL stores them in its catalog.
 */

export const DEFAULT_SCHEMA = 'public';

const UNQUOTED = /^[A-Za-z_][A-Za-z0-9_$]*$/;

export type ParsedName = { ok: true; parts: string[] } | { ok: false; message: string };

/**
 * Split a dotted name into catalog names. `wildcard` allows an unquoted `*` as a part.
 * Quoted parts keep their case and may hold any character but an empty string.
 */
export function parseDottedName(
  text: string,
  opts: { wildcard?: boolean; maxParts?: number } = {},
): ParsedName {
  const maxParts = opts.maxParts ?? 2;
  const parts: string[] = [];
  let i = 0;
  for (;;) {
    if (text[i] === '"') {
      let name = '';
      let j = i + 1;
      for (;;) {
        if (j >= text.length)
          return { ok: false, message: `unterminated quoted name in ${JSON.stringify(text)}` };
        if (text[j] === '"') {
          if (text[j + 1] === '"') {
            name += '"';
            j += 2;
            continue;
          }
          break;
        }
        name += text[j];
        j++;
      }
      if (!name) return { ok: false, message: `empty quoted name in ${JSON.stringify(text)}` };
      parts.push(name);
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && text[j] !== '.' && text[j] !== '"') j++;
      const raw = text.slice(i, j);
      if (raw === '*' && opts.wildcard) parts.push('*');
      else if (UNQUOTED.test(raw)) parts.push(raw.toLowerCase());
      else
        return {
          ok: false,
          message: raw
            ? `${JSON.stringify(raw)} in ${JSON.stringify(text)} is not a name: quote names with other characters ("My Table")`
            : `empty name in ${JSON.stringify(text)}`,
        };
      i = j;
    }
    if (i === text.length) break;
    if (text[i] !== '.')
      return { ok: false, message: `unexpected ${JSON.stringify(text[i])} in ${JSON.stringify(text)}` };
    i++;
  }
  if (parts.length > maxParts) {
    return {
      ok: false,
      message: `${JSON.stringify(text)} has ${parts.length} parts; at most ${maxParts} are allowed`,
    };
  }
  return { ok: true, parts };
}

/** `[schema, name]` of a possibly unqualified name; the schema defaults to public. */
export function qualify(parts: string[]): [string, string] {
  return parts.length === 1 ? [DEFAULT_SCHEMA, parts[0]!] : [parts[0]!, parts[1]!];
}
